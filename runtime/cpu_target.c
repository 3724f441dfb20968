/* The CPU as an execution target (scheduler/target.h): a range of layers
 * on the thread pool, for every supported architecture. A CPU target owns
 * its thread pool, the KV cache of its layers, the scratch of one batch
 * and the quantized copies of the activations; it is made only when a
 * placement puts layers on the CPU.
 *
 * A batch of tokens runs through the range as:
 *   per layer: xn = norm(x); q,k,v = xn·W (+bias); q,k = qk_norm, rope;
 *              append k,v to the cache; att = attention(q, cache);
 *              o = att·Wo (post-norm for gemma3); x += o;
 *              xn = norm(x); f = down(act(gate·xn) * up·xn) (post-norm);
 *              x += f
 *   logits = norm(x_last)·output   (the target with the head)
 * Matrix products run on the pool, split by weight rows; the activations
 * are quantized once per format the weights need. Attention runs on the
 * pool split by (token, head). The small vector work (norms, rope,
 * residual adds) stays on the calling thread, where it costs less than a
 * hand-off. Nothing here allocates after create. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/attn.h"
#include "runtime/cpu/glu.h"
#include "runtime/cpu/moe.h"
#include "runtime/cpu/norm.h"
#include "runtime/cpu/pool.h"
#include "runtime/cpu/quant.h"
#include "runtime/cpu/rope.h"
#include "runtime/session_priv.h"
#include "scheduler/profile.h"
#include "scheduler/target.h"

/* Activation formats a dot product may need (ks_cpu_act_type); one
 * quantized copy of the current input per format. */
enum { KS_N_ACT_SLOTS = 6 };

typedef struct ks_act_slot {
    ks_qtype    type;    /* KS_QUANT_F32, F16, BF16, Q8_0, Q8_1 or Q8_K */
    uint8_t    *buf;     /* [n_batch][stride] */
    uint64_t    stride;  /* bytes per row for the widest input */
    const float *src;    /* the input it holds now; NULL: stale */
} ks_act_slot;

typedef struct cpu_target {
    const ks_model *m;
    uint32_t    l0, l1;      /* layers [l0, l1) */
    ks_pool    *pool;
    const int  *threads_now; /* the session's thread count (the governor
                                changes it between tokens) */
    int         max_threads; /* the pool's size */
    int         n_threads;   /* for the run under way */
    uint32_t    n_ctx;
    uint32_t    n_batch;
    ks_kv_type  kv_type;
    bool        check_layers;
    uint64_t    busy_ns;
    ks_profile *prof;        /* NULL: not profiling */

    uint64_t    kv_dim;      /* n_head_kv * head_dim */
    uint64_t    kv_row_bytes;
    uint64_t    kv_bytes;    /* both caches */
    uint8_t    *k_cache;     /* [l1 - l0][n_ctx][kv_dim], f16 or f32 */
    uint8_t    *v_cache;     /* same */

    /* The run under way: the caller's hidden state and logits, and
     * whether every token takes the one-token arithmetic (run_logits:
     * each row as a run of that token alone would give it). */
    bool        rowwise;
    float      *x;           /* [n][n_embd] */
    float      *logits;      /* [n_vocab] */

    /* Scratch for one batch of up to n_batch tokens. */
    float      *xn;          /* [n_batch][max(n_embd, q_dim, n_ff)] normed input */
    float      *q;           /* [n_batch][q_dim] */
    float      *k;           /* [n_batch][kv_dim] */
    float      *v;           /* [n_batch][kv_dim] */
    float      *att;         /* [n_batch][q_dim] attention output */
    float      *g;           /* [n_batch][n_ff] gate, then activation */
    float      *u;           /* [n_batch][n_ff] up */
    float      *rope;        /* [2][n_batch][n_rot] cos, sin pairs */
    float      *scores;      /* [max_threads][n_ctx] */
    float      *vtmp;        /* [max_threads][head_dim] */
    uint8_t    *qh;          /* [max_threads][head_dim] query in KV format */
    ks_act_slot act[KS_N_ACT_SLOTS];
    struct ks_moe *moe;      /* the experts' scratch (MoE models), or NULL */
} cpu_target;

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
    bool             rowwise;        /* each token with the one-token kernels */
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
         * depends on the whole matrix's shape and on n_tok); rowwise,
         * every token as a run of it alone sums it, each weight block
         * loaded once for all */
        if (j->rowwise)
            ks_cpu_matmul_rows_as_one(w->type, W, w->row_bytes, w->ne0, (int64_t)w->ne1,
                                      r1 - r0, j->xq[i], j->xq_stride[i], j->n_tok,
                                      j->y[i] + r0, j->ldy[i]);
        else
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
act_for(cpu_target *s, ks_qtype wtype, const float *src, uint64_t n,
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
stale_acts(cpu_target *s)
{
    for (int i = 0; i < KS_N_ACT_SLOTS; i++)
        s->act[i].src = NULL;
}

/* ---- profiling (scheduler/profile.h) ---- */

static uint64_t
prof_start(const cpu_target *s)
{
    return s->prof ? ks_now_ns() : 0;
}

static void
prof_end(cpu_target *s, ks_prof_op op, int32_t layer, uint64_t t0, uint64_t bytes)
{
    if (s->prof)
        ks_profile_add(s->prof, "cpu", op, layer, ks_now_ns() - t0, bytes);
}

/* Bytes a product of n_tok rows moves: the weights once, the f32 input
 * read and its quantized copy written and read, the f32 output. */
static uint64_t
mat_bytes(const ks_weight *w, uint32_t n_tok)
{
    return w->row_bytes * w->ne1 +
           (uint64_t)n_tok * (w->ne0 * 4 + 2 * ks_cpu_act_bytes(w->type, w->ne0) +
                              w->ne1 * 4);
}

/* y_i = x · W_i for up to three weights sharing one input. */
static void
matmuls(cpu_target *s, const float *x, uint64_t ldx, uint32_t n_tok, int n,
        const ks_weight *const *w, float *const *y, const uint64_t *ldy)
{
    mat_job j = { .n_mats = n, .n_tok = n_tok, .rowwise = s->rowwise && n_tok > 1 };

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
matmul1(cpu_target *s, const float *x, uint64_t ldx, uint32_t n_tok,
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
    cpu_target     *s;
    uint32_t        layer;
    uint32_t        n_tok;
    uint32_t        pos0;
    bool            swa;
} attn_job;

static void
attn_worker(void *ctx, int ith, int nth)
{
    const attn_job *j = ctx;
    cpu_target *s = j->s;
    const ks_hparams *hp = &s->m->hp;
    uint32_t hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    uint64_t q_dim = (uint64_t)hp->n_head * hd;
    ks_qtype kt = s->kv_type == KS_KV_F16 ? KS_QUANT_F16 : KS_QUANT_F32;
    uint64_t layer_off = (uint64_t)(j->layer - s->l0) * s->n_ctx * s->kv_row_bytes;
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
        if (j->n_tok >= 64 && !s->rowwise) {
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

/* Keys one attention job visits, over its tokens. */
static uint64_t
attn_keys(const cpu_target *s, bool swa, uint32_t n, uint32_t pos0)
{
    const ks_hparams *hp = &s->m->hp;
    uint64_t keys = 0;

    for (uint32_t t = 0; t < n; t++) {
        uint32_t pos = pos0 + t, first = 0;
        if (swa && pos + 1 > hp->n_swa)
            first = pos + 1 - hp->n_swa;
        keys += pos + 1 - first;
    }
    return keys;
}

/* Bytes one attention job reads and writes: each token's queries and
 * outputs, and the keys and values of the positions it attends to (each
 * KV head's rows once per token). */
static uint64_t
attn_bytes(const cpu_target *s, bool swa, uint32_t n, uint32_t pos0, uint64_t q_dim)
{
    return attn_keys(s, swa, n, pos0) * 2 * s->kv_row_bytes + (uint64_t)n * q_dim * 8;
}

/* Vector jobs that move fewer bytes than SMALL_JOB_BYTES (activations)
 * or do fewer multiply-adds than SMALL_JOB_MACS (attention) run on the
 * calling thread: 10-30 us of work, about what a hand-off to the pool
 * and back costs when the other cores are busy (the profile of a loaded
 * 2-core machine showed a 1-token SiLU of 8960 values, 0.1 MB, taking
 * 0.2 ms on the pool). The arithmetic of each item does not depend on
 * the thread, so neither do the results. */
#define SMALL_JOB_BYTES (192u << 10)
#define SMALL_JOB_MACS  (128u << 10)

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
 * |head| and n_logits > 0: the logits of the last n_logits tokens, row by
 * row, in s->logits. */
static ks_status
cpu_range(cpu_target *s, uint32_t l0, uint32_t l1, bool head, uint32_t n, uint32_t pos0,
          uint32_t n_logits)
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
        uint64_t layer_off = (uint64_t)(il - s->l0) * s->n_ctx * s->kv_row_bytes;

        int32_t li = (int32_t)il;
        uint64_t t0 = prof_start(s);

        /* attention block */
        for (uint32_t t = 0; t < n; t++)
            ks_cpu_norm_rms(s->xn + t * E, s->x + t * E, L->attn_norm.data, E, hp->eps);
        prof_end(s, KS_PROF_NORM, li, t0, (uint64_t)n * E * 8 + E * 4);
        stale_acts(s);
        t0 = prof_start(s);
        {
            const ks_weight *w[3] = { &L->wq, &L->wk, &L->wv };
            float *y[3] = { s->q, s->k, s->v };
            uint64_t ldy[3] = { q_dim, kv_dim, kv_dim };
            matmuls(s, s->xn, E, n, 3, w, y, ldy);
        }
        add_bias(s->q, &L->bq, n, q_dim);
        add_bias(s->k, &L->bk, n, kv_dim);
        add_bias(s->v, &L->bv, n, kv_dim);
        prof_end(s, KS_PROF_QKV, li, t0,
                 mat_bytes(&L->wq, n) + mat_bytes(&L->wk, n) + mat_bytes(&L->wv, n));
        t0 = prof_start(s);
        for (uint32_t t = 0; t < n; t++) {
            /* QK-norm per head, or over the whole row (olmoe: its norm
             * weights are as long as the row) */
            for (uint64_t i = 0; L->q_norm.data && i < q_dim; i += L->q_norm.ne0)
                ks_cpu_norm_rms(s->q + t * q_dim + i, s->q + t * q_dim + i, L->q_norm.data,
                                L->q_norm.ne0, hp->eps);
            for (uint64_t i = 0; L->k_norm.data && i < kv_dim; i += L->k_norm.ne0)
                ks_cpu_norm_rms(s->k + t * kv_dim + i, s->k + t * kv_dim + i,
                                L->k_norm.data, L->k_norm.ne0, hp->eps);
            for (uint32_t h = 0; h < hp->n_head; h++)
                ks_cpu_rope_apply(s->q + t * q_dim + h * hd, cs + (uint64_t)t * hp->n_rot,
                                  hp->n_rot, hp->rope_neox);
            for (uint32_t h = 0; h < hp->n_head_kv; h++)
                ks_cpu_rope_apply(s->k + t * kv_dim + h * hd, cs + (uint64_t)t * hp->n_rot,
                                  hp->n_rot, hp->rope_neox);
            store_kv(s->k_cache + layer_off +
                         (uint64_t)(pos0 + t) * s->kv_row_bytes,
                     s->k + t * kv_dim, kv_dim, s->kv_type);
            store_kv(s->v_cache + layer_off +
                         (uint64_t)(pos0 + t) * s->kv_row_bytes,
                     s->v + t * kv_dim, kv_dim, s->kv_type);
        }
        prof_end(s, KS_PROF_ROPE_KV, li, t0,
                 (uint64_t)n * ((q_dim + kv_dim) * 8 + 2 * s->kv_row_bytes));
        t0 = prof_start(s);
        {
            attn_job aj = { s, il, n, pos0, L->swa };
            /* multiply-adds: every query head with every key, scores
             * and values */
            uint64_t macs = attn_keys(s, L->swa, n, pos0) * q_dim * 2;
            ks_pool_run_n(s->pool, macs < SMALL_JOB_MACS ? 1 : s->n_threads, attn_worker,
                          &aj);
        }
        prof_end(s, KS_PROF_ATTN, li, t0, attn_bytes(s, L->swa, n, pos0, q_dim));
        /* the output projection lands in xn, free again */
        t0 = prof_start(s);
        matmul1(s, s->att, q_dim, n, &L->wo, s->xn, E);
        prof_end(s, KS_PROF_ATTN_OUT, li, t0, mat_bytes(&L->wo, n));
        t0 = prof_start(s);
        for (uint32_t t = 0; t < n; t++) {
            float *o = s->xn + t * E, *x = s->x + t * E;
            ks_cpu_norm_add(x, o, L->post_attn_norm.data, E, hp->eps);
        }
        prof_end(s, KS_PROF_ADD, li, t0, (uint64_t)n * E * 12);

        /* feed-forward block; in the last layer llama.cpp runs it for
         * the tokens whose logits are wanted only (inp_out_ids), with its
         * one-token kernels for one, and so do we (the others are never
         * read) */
        uint32_t f0 = (il + 1 == hp->n_layers && head && n_logits) ? n - n_logits : 0;
        uint32_t nf = n - f0;
        t0 = prof_start(s);
        for (uint32_t t = f0; t < n; t++)
            ks_cpu_norm_rms(s->xn + t * E, s->x + t * E, L->ffn_norm.data, E, hp->eps);
        prof_end(s, KS_PROF_NORM, li, t0, (uint64_t)nf * E * 8 + E * 4);
        stale_acts(s);
        if (L->gate_inp.data) {
            /* mixture of experts (runtime/cpu/moe.c), in place in xn */
            t0 = prof_start(s);
            ks_moe_ffn(s->moe, L, s->pool, s->n_threads, s->rowwise && nf > 1,
                       s->xn + (uint64_t)f0 * E, E, nf, s->xn + (uint64_t)f0 * E, E);
            prof_end(s, KS_PROF_MOE, li, t0, 0);
        } else {
            const ks_weight *w[2] = { &L->gate, &L->up };
            float *y[2] = { s->g, s->u };
            uint64_t ldy[2] = { F, F };
            act_job fj = { s->g, s->u, (uint64_t)nf * F, F, hp->act };

            t0 = prof_start(s);
            matmuls(s, s->xn + (uint64_t)f0 * E, E, nf, 2, w, y, ldy);
            prof_end(s, KS_PROF_GATE_UP, li, t0,
                     mat_bytes(&L->gate, nf) + mat_bytes(&L->up, nf));
            t0 = prof_start(s);
            if ((uint64_t)nf * F * 12 < SMALL_JOB_BYTES)
                act_worker(&fj, 0, 1);
            else
                ks_pool_run_n(s->pool, s->n_threads, act_worker, &fj);
            prof_end(s, KS_PROF_ACT, li, t0, (uint64_t)nf * F * 12);
            t0 = prof_start(s);
            matmul1(s, s->g, F, nf, &L->down, s->xn + (uint64_t)f0 * E, E);
            prof_end(s, KS_PROF_DOWN, li, t0, mat_bytes(&L->down, nf));
        }
        t0 = prof_start(s);
        for (uint32_t t = f0; t < n; t++) {
            float *o = s->xn + t * E, *x = s->x + t * E;
            ks_cpu_norm_add(x, o, L->post_ffw_norm.data, E, hp->eps);
        }
        prof_end(s, KS_PROF_ADD, li, t0, (uint64_t)nf * E * 12);
        if (s->check_layers && !finite_rows(s->x, (uint64_t)n * E))
            return ks_error(KS_ERR_CORRUPT, "forward: layer %u produced NaN or infinite "
                            "values (at positions %u..%u, on the CPU)", il, pos0,
                            pos0 + n - 1);
    }

    if (head && n_logits) {
        uint32_t h0 = n - n_logits;
        uint64_t t0 = prof_start(s);
        for (uint32_t t = h0; t < n; t++)
            ks_cpu_norm_rms(s->xn + (uint64_t)t * E, s->x + (uint64_t)t * E,
                            m->output_norm.data, E, hp->eps);
        prof_end(s, KS_PROF_NORM, -1, t0, (uint64_t)n_logits * E * 8 + E * 4);
        stale_acts(s);
        t0 = prof_start(s);
        matmul1(s, s->xn + (uint64_t)h0 * E, E, n_logits, &m->output, s->logits,
                hp->n_vocab);
        prof_end(s, KS_PROF_HEAD, -1, t0, mat_bytes(&m->output, n_logits));
    }
    return KS_OK;
}

/* ---- the target ---- */

static ks_status
cpu_target_go(ks_target *t, float *x, uint32_t n, uint32_t pos0, uint32_t n_logits,
              float *logits, bool rowwise)
{
    cpu_target *c = t->impl;
    uint64_t t0 = ks_now_ns();
    ks_status st;

    if (n == 0 || n > c->n_batch || (uint64_t)pos0 + n > c->n_ctx || n_logits > n ||
        (n_logits && !t->head))
        return ks_error(KS_ERR_INTERNAL, "cpu: run of %u tokens at %u with %u logits "
                        "(batch %u, context %u)", n, pos0, n_logits, c->n_batch, c->n_ctx);
    c->n_threads = c->threads_now && *c->threads_now >= 1 &&
                           *c->threads_now <= c->max_threads
                       ? *c->threads_now
                       : c->max_threads;
    c->x = x;
    c->logits = logits;
    c->rowwise = rowwise;
    st = cpu_range(c, t->l0, t->l1, t->head, n, pos0, n_logits);
    c->busy_ns += ks_now_ns() - t0;
    return st;
}

static ks_status
cpu_target_run(ks_target *t, float *x, uint32_t n, uint32_t pos0, bool want_logits,
               float *logits)
{
    return cpu_target_go(t, x, n, pos0, want_logits && t->head ? 1 : 0, logits, false);
}

/* Verification: every row with the one-token kernels, so that each
 * token's keys, values and logits are bitwise those of decoding it
 * alone (greedy speculation then gives plain greedy's tokens); the
 * weights of a matrix chunk are still read from memory once for all the
 * rows. */
static ks_status
cpu_target_run_logits(ks_target *t, float *x, uint32_t n, uint32_t pos0, uint32_t n_logits,
                      float *logits)
{
    return cpu_target_go(t, x, n, pos0, n_logits, logits, true);
}

static void
cpu_target_stats(const ks_target *t, ks_target_stats *out)
{
    const cpu_target *c = t->impl;

    memset(out, 0, sizeof(*out));
    out->kv_bytes = c->kv_bytes;
    out->busy_ns = c->busy_ns;
}

static void
cpu_target_free(cpu_target *c)
{
    if (!c)
        return;
    ks_pool_destroy(c->pool);
    ks_moe_destroy(c->moe);
    free(c->k_cache);
    free(c->v_cache);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->g);
    free(c->u);
    free(c->rope);
    free(c->scores);
    free(c->vtmp);
    free(c->qh);
    for (int i = 0; i < KS_N_ACT_SLOTS; i++)
        free(c->act[i].buf);
    free(c);
}

static void
cpu_target_destroy(ks_target *t)
{
    cpu_target_free(t->impl);
    free(t);
}

static const ks_target_ops cpu_ops = { cpu_target_run, cpu_target_destroy, NULL, NULL,
                                       cpu_target_stats, cpu_target_run_logits };

/* Every architecture, type and op the loader accepts runs on the CPU. */
static const char *
cpu_supports(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head)
{
    (void)env, (void)l0, (void)l1, (void)head;
    return NULL;
}

static void *
alloc_floats(uint64_t n, bool *ok)
{
    void *p = calloc(n ? n : 1, sizeof(float));

    if (!p)
        *ok = false;
    return p;
}

/* One activation slot per format that some weight of the range needs. */
static bool
add_act_slot(cpu_target *c, ks_qtype wtype, uint64_t max_n)
{
    ks_qtype at = ks_cpu_act_type(wtype);
    int free_i = -1;

    for (int i = 0; i < KS_N_ACT_SLOTS; i++) {
        if (c->act[i].buf && c->act[i].type == at)
            return true;
        if (!c->act[i].buf && free_i < 0)
            free_i = i;
    }
    if (free_i < 0)
        return false;
    c->act[free_i].type = at;
    c->act[free_i].stride = ks_align_up(ks_cpu_act_bytes(wtype, max_n), 64);
    c->act[free_i].buf = calloc(c->n_batch, c->act[free_i].stride);
    return c->act[free_i].buf != NULL;
}

static bool
add_act_slots(cpu_target *c, bool head, uint64_t max_n)
{
    const ks_model *m = c->m;
    bool ok = !head || add_act_slot(c, m->output.type, max_n);

    for (uint32_t i = c->l0; ok && i < c->l1; i++) {
        const ks_layer *l = &m->layers[i];
        const ks_weight *ws[] = { &l->wq, &l->wk, &l->wv, &l->wo,
                                  &l->gate, &l->up, &l->down };
        for (size_t k = 0; ok && k < sizeof ws / sizeof ws[0]; k++)
            ok = add_act_slot(c, ws[k]->type, max_n);
    }
    return ok;
}

/* The KV cache of the range (lazily mapped zero pages: only positions
 * used cost memory) and the scratch of one batch. */
static ks_status
cpu_alloc(cpu_target *c, bool head)
{
    const ks_hparams *hp = &c->m->hp;
    uint64_t q_dim = (uint64_t)hp->n_head * hp->head_dim, nb = c->n_batch;
    uint64_t max_n = hp->n_embd > q_dim ? hp->n_embd : q_dim, cache_bytes;
    bool ok = true;

    if (hp->n_ff > max_n)
        max_n = hp->n_ff;
    c->kv_dim = (uint64_t)hp->n_head_kv * hp->head_dim;
    c->kv_row_bytes = c->kv_dim * (c->kv_type == KS_KV_F16 ? 2 : 4);
    if (!ks_mul_size(c->kv_row_bytes, c->n_ctx, &cache_bytes) ||
        !ks_mul_size(cache_bytes, c->l1 - c->l0, &cache_bytes) ||
        cache_bytes > ((uint64_t)1 << 40))
        return ks_error(KS_ERR_INVALID_ARG, "cpu: a KV cache of %u tokens is too large",
                        c->n_ctx);
    if (cache_bytes > 0) {
        c->k_cache = calloc(1, cache_bytes);
        c->v_cache = calloc(1, cache_bytes);
        if (!c->k_cache || !c->v_cache)
            return ks_error(KS_ERR_NOMEM, "cpu: no memory for a KV cache of %u tokens "
                            "(%.1f MiB); try a smaller -c", c->n_ctx,
                            2.0 * (double)cache_bytes / 1048576.0);
    }
    c->kv_bytes = 2 * cache_bytes;
    c->xn = alloc_floats(nb * max_n, &ok);
    c->q = alloc_floats(nb * q_dim, &ok);
    c->k = alloc_floats(nb * c->kv_dim, &ok);
    c->v = alloc_floats(nb * c->kv_dim, &ok);
    c->att = alloc_floats(nb * q_dim, &ok);
    c->g = alloc_floats(nb * hp->n_ff, &ok);
    c->u = alloc_floats(nb * hp->n_ff, &ok);
    c->rope = alloc_floats(2 * nb * hp->n_rot, &ok);
    c->scores = alloc_floats((uint64_t)c->max_threads * c->n_ctx, &ok);
    c->vtmp = alloc_floats((uint64_t)c->max_threads * hp->head_dim, &ok);
    c->qh = calloc((size_t)c->max_threads, hp->head_dim * 4u);
    if (!ok || !c->qh || !add_act_slots(c, head, max_n))
        return ks_error(KS_ERR_NOMEM, "cpu: no memory for activations");
    if (hp->n_expert)
        return ks_moe_create(c->m, c->l0, c->l1, c->n_batch, &c->moe);
    return KS_OK;
}

static ks_status
cpu_create(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head, ks_target **out)
{
    ks_target *t = calloc(1, sizeof(*t));
    cpu_target *c = calloc(1, sizeof(*c));
    ks_status st;

    *out = NULL;
    if (!t || !c) {
        st = ks_error(KS_ERR_NOMEM, "targets: no memory");
        goto fail;
    }
    c->m = env->model;
    c->l0 = l0;
    c->l1 = l1;
    c->threads_now = env->threads_now;
    c->max_threads = env->max_threads > 0 ? env->max_threads : 1;
    c->n_threads = c->max_threads;
    c->n_ctx = env->n_ctx;
    c->n_batch = env->n_batch;
    c->kv_type = env->kv_f32 ? KS_KV_F32 : KS_KV_F16;
    c->check_layers = env->check_layers;
    c->prof = env->profile;
    if ((st = ks_pool_create(c->max_threads, &c->pool)) != KS_OK ||
        (st = cpu_alloc(c, head)) != KS_OK)
        goto fail;
    ks_target_init(t, &cpu_ops, c, "cpu", l0, l1, head, false);
    snprintf(t->desc, sizeof t->desc, "cpu (%d threads, %s kernels) layers %u-%u%s",
             c->max_threads, ks_cpu_simd_name(ks_cpu_simd()), l0, l1 - 1,
             head ? " + head" : "");
    *out = t;
    return KS_OK;
fail:
    cpu_target_free(c);
    free(t);
    return st;
}

const ks_target_kind ks_cpu_target_kind = { "cpu", cpu_supports, NULL, NULL, cpu_create };
