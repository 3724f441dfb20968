/* The transformer forward pass: the embedding lookup, then the layer
 * ranges of the session's placement, each on its execution target
 * (scheduler/target.h); and the CPU target, for every supported
 * architecture.
 *
 * On the CPU, a batch of tokens runs through a range of layers as:
 *   x = embed(tokens) * emb_scale
 *   per layer: xn = norm(x); q,k,v = xn·W (+bias); q,k = qk_norm, rope;
 *              append k,v to the cache; att = attention(q, cache);
 *              o = att·Wo (post-norm for gemma3); x += o;
 *              xn = norm(x); f = down(act(gate·xn) * up·xn) (post-norm);
 *              x += f
 *   logits = norm(x_last)·output
 * Matrix products run on the thread pool, split by weight rows; the
 * activations are quantized once per format the weights need. Attention
 * runs on the pool split by (token, head). The small vector work (norms,
 * rope, residual adds) stays on the calling thread, where it costs less
 * than a hand-off. Nothing here allocates but a target's record. */
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

/* ---- matrix products on the pool ---- */

enum { MAX_MATS = 3 };

typedef struct mat_job {
    int             n_mats;
    const ks_weight *w[MAX_MATS];
    float           *y[MAX_MATS];    /* [n_tok][ldy] */
    uint64_t         ldy[MAX_MATS];
    const uint8_t   *xq[MAX_MATS];   /* quantized input rows */
    uint64_t         xq_stride[MAX_MATS];
    uint32_t         n_tok;
} mat_job;

static void
mat_worker(void *ctx, int ith, int nth)
{
    const mat_job *j = ctx;
    int64_t chunk_rows[MAX_MATS], n_chunks[MAX_MATS], n_items = 0, k;

    /* Each matrix in chunks of rows claimed with ks_pool_claim, so that a
     * worker held off its core delays the job by one chunk, not by its
     * whole share: about 4 chunks per worker, of 64 KiB to 1 MiB of
     * weights, in multiples of 16 rows, which keep the SIMD kernels on
     * their multi-row paths. */
    for (int i = 0; i < j->n_mats; i++) {
        const ks_weight *w = j->w[i];
        uint64_t bytes = w->row_bytes * w->ne1, chunk = bytes / (uint64_t)(4 * nth);
        int64_t groups = ((int64_t)w->ne1 + 15) / 16, want;
        if (chunk < (64u << 10))
            chunk = 64u << 10;
        if (chunk > (1u << 20))
            chunk = 1u << 20;
        want = (int64_t)((bytes + chunk - 1) / chunk);
        if (want > groups)
            want = groups;
        chunk_rows[i] = (groups + want - 1) / want * 16;
        n_chunks[i] = ((int64_t)w->ne1 + chunk_rows[i] - 1) / chunk_rows[i];
        n_items += n_chunks[i];
    }
    (void)ith;
    while ((k = ks_pool_claim(n_items)) >= 0) {
        int i = 0;
        while (k >= n_chunks[i])
            k -= n_chunks[i++];
        const ks_weight *w = j->w[i];
        int64_t r0 = k * chunk_rows[i], r1 = r0 + chunk_rows[i];
        const uint8_t *W;

        if (r1 > (int64_t)w->ne1)
            r1 = (int64_t)w->ne1;
        W = (const uint8_t *)w->data + (uint64_t)r0 * w->row_bytes;
        /* summed as llama.cpp sums this matrix's product (its path
         * depends on the whole matrix's shape and on n_tok) */
        ks_cpu_matmul_rows(w->type, W, w->row_bytes, w->ne0,
                           (int64_t)w->ne1, r1 - r0, j->xq[i],
                           j->xq_stride[i], j->n_tok, j->y[i] + r0,
                           j->ldy[i]);
    }
}

typedef struct quant_job {
    ks_qtype     wtype;
    const float *src;
    uint64_t     n;
    uint64_t     ld;
    uint8_t     *dst;
    uint64_t     stride;
    uint32_t     n_tok;
} quant_job;

static void
quant_worker(void *ctx, int ith, int nth)
{
    const quant_job *j = ctx;
    int64_t t0, t1;

    ks_pool_range(j->n_tok, 1, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++)
        ks_cpu_quantize_act(j->wtype, j->src + (uint64_t)t * j->ld,
                            j->dst + (uint64_t)t * j->stride, j->n);
}

/* The rows src[0..n_tok) (|ld| floats apart, |n| used) in the format that
 * weights of type |wtype| consume, quantized at most once per input. */
static const uint8_t *
act_for(ks_session *s, ks_qtype wtype, const float *src, uint64_t n,
        uint64_t ld, uint32_t n_tok, uint64_t *stride)
{
    ks_qtype at = ks_cpu_act_type(wtype);
    ks_act_slot *slot = NULL;

    for (int i = 0; i < KS_N_ACT_SLOTS; i++)
        if (s->act[i].buf && s->act[i].type == at)
            slot = &s->act[i];
    /* session.c allocated a slot for every format this model needs */
    *stride = slot->stride;
    if (slot->src != src) {
        quant_job qj = { wtype, src, n, ld, slot->buf, slot->stride, n_tok };
        if (n_tok == 1)
            quant_worker(&qj, 0, 1);
        else
            ks_pool_run_n(s->pool, s->n_threads, quant_worker, &qj);
        slot->src = src;
    }
    return slot->buf;
}

static void
stale_acts(ks_session *s)
{
    for (int i = 0; i < KS_N_ACT_SLOTS; i++)
        s->act[i].src = NULL;
}

/* y_i = x · W_i for up to three weights sharing one input. */
static void
matmuls(ks_session *s, const float *x, uint64_t ldx, uint32_t n_tok, int n,
        const ks_weight *const *w, float *const *y, const uint64_t *ldy)
{
    mat_job j = { .n_mats = n, .n_tok = n_tok };

    for (int i = 0; i < n; i++) {
        j.w[i] = w[i];
        j.y[i] = y[i];
        j.ldy[i] = ldy[i];
        j.xq[i] = act_for(s, w[i]->type, x, w[i]->ne0, ldx, n_tok,
                          &j.xq_stride[i]);
    }
    ks_pool_run_n(s->pool, s->n_threads, mat_worker, &j);
}

static void
matmul1(ks_session *s, const float *x, uint64_t ldx, uint32_t n_tok,
        const ks_weight *w, float *y, uint64_t ldy)
{
    matmuls(s, x, ldx, n_tok, 1, &w, &y, &ldy);
}

/* ---- vector helpers ---- */

static void
add_bias(float *y, const ks_weight *b, uint32_t n_tok, uint64_t ld)
{
    const float *bias = b->data;

    if (!bias)
        return;
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint64_t i = 0; i < b->ne0; i++)
            y[(uint64_t)t * ld + i] += bias[i];
}

static void
store_kv(uint8_t *dst, const float *src, uint64_t n, ks_kv_type t)
{
    if (t == KS_KV_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (uint64_t i = 0; i < n; i++)
        ((uint16_t *)dst)[i] = ks_f32_to_fp16(src[i]);
}

/* ---- attention ---- */

typedef struct attn_job {
    ks_session     *s;
    uint32_t        layer;
    uint32_t        n_tok;
    uint32_t        pos0;
    bool            swa;
} attn_job;

static void
attn_worker(void *ctx, int ith, int nth)
{
    const attn_job *j = ctx;
    ks_session *s = j->s;
    const ks_hparams *hp = &s->m->hp;
    uint32_t hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    uint64_t q_dim = (uint64_t)hp->n_head * hd;
    ks_qtype kt = s->kv_type == KS_KV_F16 ? KS_QUANT_F16 : KS_QUANT_F32;
    uint64_t layer_off = (uint64_t)j->layer * s->n_ctx * s->kv_row_bytes;
    uint64_t elem = s->kv_type == KS_KV_F16 ? 2 : 4;
    float *scores = s->scores + (uint64_t)ith * s->n_ctx;
    float *vrow = s->vtmp + (uint64_t)ith * hd;
    uint8_t *qh = s->qh + (uint64_t)ith * hd * 4;
    int64_t n_pairs = (int64_t)j->n_tok * hp->n_head;

    /* pairs claimed one at a time (a causal batch's later tokens attend
     * to more keys, so fixed ranges would load the last worker most) */
    (void)nth;
    for (int64_t pair; (pair = ks_pool_claim(n_pairs)) >= 0;) {
        uint32_t t = (uint32_t)(pair / hp->n_head);
        uint32_t h = (uint32_t)(pair % hp->n_head);
        uint32_t kvh = h / group, pos = j->pos0 + t;
        uint32_t first = 0, n_keys;
        float scale = hp->attn_scale;
        const float *q = s->q + (uint64_t)t * q_dim + (uint64_t)h * hd;
        float *out = s->att + (uint64_t)t * q_dim + (uint64_t)h * hd;
        const uint8_t *kbase, *vbase;

        if (j->swa && pos + 1 > hp->n_swa)
            first = pos + 1 - hp->n_swa;
        n_keys = pos + 1 - first;
        kbase = s->k_cache + layer_off + (uint64_t)first * s->kv_row_bytes +
                (uint64_t)kvh * hd * elem;
        vbase = s->v_cache + layer_off + (uint64_t)first * s->kv_row_bytes +
                (uint64_t)kvh * hd * elem;

        /* batches of 64 or more queries take llama.cpp's tiled flash
         * attention: f32 query (gemma3's scaled first), f32 sums */
        if (j->n_tok >= 64) {
            const uint8_t *k0 = s->k_cache + layer_off + (uint64_t)kvh * hd * elem;
            const uint8_t *v0 = s->v_cache + layer_off + (uint64_t)kvh * hd * elem;
            if (s->m->arch == KS_ARCH_GEMMA3) {
                float *qs = (float *)qh;
                for (uint32_t d = 0; d < hd; d++)
                    qs[d] = q[d] * hp->attn_scale;
                q = qs;
                scale = 1.0f;
            }
            ks_cpu_attn_tiled(kt, q, k0, v0, s->kv_row_bytes, hd, first,
                              n_keys, scale, scores, vrow, out);
            continue;
        }
        /* llama.cpp scales gemma3's Q in f32 before attention and then
         * attends with scale 1: round to the cache format after the
         * scaling, as it does (vrow is free until the value sum) */
        if (s->m->arch == KS_ARCH_GEMMA3) {
            for (uint32_t d = 0; d < hd; d++)
                vrow[d] = q[d] * hp->attn_scale;
            q = vrow;
            scale = 1.0f;
        }
        /* Scores: the query in the cache's format dotted with each key
         * row, as llama.cpp converts Q to the K type. */
        ks_cpu_quantize_act(kt, q, qh, hd);
        if (kt == KS_QUANT_F16)
            ks_cpu_attn_scores_f16(kbase, s->kv_row_bytes, hd, n_keys,
                                   (const uint16_t *)qh, scores);
        else
            ks_cpu_matvec(kt, kbase, s->kv_row_bytes, hd, n_keys, qh,
                          scores);
        /* Online softmax over the keys in order, the value sum kept in
         * the cache's precision: llama.cpp's CPU flash attention does
         * this (an fp16 accumulator for an f16 cache), and following it
         * keeps greedy tokens identical to the peer's. */
        ks_cpu_attn_accum(kt, vbase, s->kv_row_bytes, hd, n_keys, scores,
                          scale, vrow, out);
    }
}

/* ---- FFN activation ---- */

typedef struct act_job {
    float   *g;
    const float *u;
    uint64_t n;  /* n_tok * n_ff */
    uint64_t n_ff;
    ks_act   act;
} act_job;

static void
act_worker(void *ctx, int ith, int nth)
{
    const act_job *j = ctx;
    int64_t i0, i1;

    ks_pool_range((int64_t)j->n, 64, ith, nth, &i0, &i1);
    if (j->act == KS_ACT_SILU)
        ks_cpu_glu_silu(j->g, j->u, j->n_ff, (uint64_t)i0, (uint64_t)i1);
    else
        ks_cpu_glu_gelu(j->g, j->u, j->n_ff, (uint64_t)i0, (uint64_t)i1);
}

/* ---- a layer range on the CPU ---- */

/* KESTREL_CHECK=1: every float of a layer's output is a number. */
static bool
finite_rows(const float *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

/* Layers [l0, l1) of a batch on the CPU, on s->x, with the head when
 * |head| and want_logits. */
static ks_status
cpu_range(ks_session *s, uint32_t l0, uint32_t l1, bool head, uint32_t n, uint32_t pos0,
          bool want_logits)
{
    const ks_model *m = s->m;
    const ks_hparams *hp = &m->hp;
    uint64_t E = hp->n_embd, hd = hp->head_dim;
    uint64_t q_dim = (uint64_t)hp->n_head * hd, kv_dim = s->kv_dim;
    uint64_t F = hp->n_ff;
    float *cs_global = s->rope;
    float *cs_local = s->rope + (uint64_t)s->n_batch * hp->n_rot;

    ks_cpu_rope_table(cs_global, pos0, n, hp->n_rot, hp->rope_base, hp->rope_scale);
    if (hp->rope_base_swa != hp->rope_base)
        ks_cpu_rope_table(cs_local, pos0, n, hp->n_rot, hp->rope_base_swa, 1.0f);
    else
        cs_local = cs_global;

    for (uint32_t il = l0; il < l1; il++) {
        const ks_layer *L = &m->layers[il];
        const float *cs = L->swa ? cs_local : cs_global;
        uint64_t layer_off = (uint64_t)il * s->n_ctx * s->kv_row_bytes;

        /* attention block */
        for (uint32_t t = 0; t < n; t++)
            ks_cpu_norm_rms(s->xn + t * E, s->x + t * E, L->attn_norm.data, E, hp->eps);
        stale_acts(s);
        {
            const ks_weight *w[3] = { &L->wq, &L->wk, &L->wv };
            float *y[3] = { s->q, s->k, s->v };
            uint64_t ldy[3] = { q_dim, kv_dim, kv_dim };
            matmuls(s, s->xn, E, n, 3, w, y, ldy);
        }
        add_bias(s->q, &L->bq, n, q_dim);
        add_bias(s->k, &L->bk, n, kv_dim);
        add_bias(s->v, &L->bv, n, kv_dim);
        for (uint32_t t = 0; t < n; t++) {
            for (uint32_t h = 0; h < hp->n_head; h++) {
                float *q = s->q + t * q_dim + h * hd;
                if (L->q_norm.data)
                    ks_cpu_norm_rms(q, q, L->q_norm.data, hd, hp->eps);
                ks_cpu_rope_apply(q, cs + (uint64_t)t * hp->n_rot, hp->n_rot, hp->rope_neox);
            }
            for (uint32_t h = 0; h < hp->n_head_kv; h++) {
                float *k = s->k + t * kv_dim + h * hd;
                if (L->k_norm.data)
                    ks_cpu_norm_rms(k, k, L->k_norm.data, hd, hp->eps);
                ks_cpu_rope_apply(k, cs + (uint64_t)t * hp->n_rot, hp->n_rot, hp->rope_neox);
            }
            store_kv(s->k_cache + layer_off +
                         (uint64_t)(pos0 + t) * s->kv_row_bytes,
                     s->k + t * kv_dim, kv_dim, s->kv_type);
            store_kv(s->v_cache + layer_off +
                         (uint64_t)(pos0 + t) * s->kv_row_bytes,
                     s->v + t * kv_dim, kv_dim, s->kv_type);
        }
        {
            attn_job aj = { s, il, n, pos0, L->swa };
            ks_pool_run_n(s->pool, s->n_threads, attn_worker, &aj);
        }
        /* the output projection lands in xn, free again */
        matmul1(s, s->att, q_dim, n, &L->wo, s->xn, E);
        for (uint32_t t = 0; t < n; t++) {
            float *o = s->xn + t * E, *x = s->x + t * E;
            ks_cpu_norm_add(x, o, L->post_attn_norm.data, E, hp->eps);
        }

        /* feed-forward block; in the last layer llama.cpp runs it for
         * the token whose logits are wanted only (inp_out_ids), with its
         * one-token kernels, and so do we (the others are never read) */
        uint32_t f0 = (il + 1 == hp->n_layers && head && want_logits) ? n - 1 : 0;
        uint32_t nf = n - f0;
        for (uint32_t t = f0; t < n; t++)
            ks_cpu_norm_rms(s->xn + t * E, s->x + t * E, L->ffn_norm.data, E, hp->eps);
        stale_acts(s);
        {
            const ks_weight *w[2] = { &L->gate, &L->up };
            float *y[2] = { s->g, s->u };
            uint64_t ldy[2] = { F, F };
            matmuls(s, s->xn + (uint64_t)f0 * E, E, nf, 2, w, y, ldy);
        }
        {
            act_job fj = { s->g, s->u, (uint64_t)nf * F, F, hp->act };
            if (nf * F < 4096)
                act_worker(&fj, 0, 1);
            else
                ks_pool_run_n(s->pool, s->n_threads, act_worker, &fj);
        }
        matmul1(s, s->g, F, nf, &L->down, s->xn + (uint64_t)f0 * E, E);
        for (uint32_t t = f0; t < n; t++) {
            float *o = s->xn + t * E, *x = s->x + t * E;
            ks_cpu_norm_add(x, o, L->post_ffw_norm.data, E, hp->eps);
        }
        if (s->check_layers && !finite_rows(s->x, (uint64_t)n * E))
            return ks_error(KS_ERR_CORRUPT, "forward: layer %u produced NaN or infinite "
                            "values (at positions %u..%u, on the CPU)", il, pos0,
                            pos0 + n - 1);
    }

    if (head && want_logits) {
        float *last = s->xn + (uint64_t)(n - 1) * E;
        ks_cpu_norm_rms(last, s->x + (uint64_t)(n - 1) * E, m->output_norm.data, E, hp->eps);
        stale_acts(s);
        matmul1(s, last, E, 1, &m->output, s->logits, hp->n_vocab);
    }
    return KS_OK;
}

/* ---- the CPU as an execution target ---- */

static ks_status
cpu_target_run(ks_target *t, float *x, uint32_t n, uint32_t pos0, bool want_logits,
               float *logits)
{
    ks_session *s = t->impl;
    ks_status st;

    /* the session hands its own buffers over; anything else is copied */
    if (x != s->x)
        memcpy(s->x, x, (uint64_t)n * s->m->hp.n_embd * sizeof(float));
    st = cpu_range(s, t->l0, t->l1, t->head, n, pos0, want_logits);
    if (st == KS_OK && x != s->x)
        memcpy(x, s->x, (uint64_t)n * s->m->hp.n_embd * sizeof(float));
    if (st == KS_OK && t->head && want_logits && logits != s->logits)
        memcpy(logits, s->logits, s->m->hp.n_vocab * sizeof(float));
    return st;
}

static void
cpu_target_destroy(ks_target *t)
{
    free(t);
}

static const ks_target_ops cpu_ops = { cpu_target_run, cpu_target_destroy, NULL, NULL, NULL };

/* Every architecture, type and op the loader accepts runs on the CPU. */
static const char *
cpu_supports(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head)
{
    (void)env, (void)l0, (void)l1, (void)head;
    return NULL;
}

static ks_status
cpu_create(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head, ks_target **out)
{
    ks_target *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (!t)
        return ks_error(KS_ERR_NOMEM, "targets: no memory");
    t->ops = &cpu_ops;
    t->impl = env->session;
    t->l0 = l0;
    t->l1 = l1;
    t->head = head;
    snprintf(t->kind, sizeof t->kind, "cpu");
    snprintf(t->desc, sizeof t->desc, "cpu (%d threads, %s kernels) layers %u-%u%s",
             ((ks_session *)env->session)->n_threads, ks_cpu_simd_name(ks_cpu_simd()), l0,
             l1 - 1, head ? " + head" : "");
    *out = t;
    return KS_OK;
}

const ks_target_kind ks_cpu_target_kind = { "cpu", cpu_supports, NULL, NULL, cpu_create };

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
