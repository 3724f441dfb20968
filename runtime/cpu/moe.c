/* The MoE FFN of one layer on the CPU, for a batch of n_tok normed rows:
 *   logits = x · router; each token's top k experts and weights
 *   (ks_moe_route); the n_tok * k choices sorted by expert
 *   (ks_moe_group); the rows gathered in that order, so each expert's
 *   tokens are contiguous and its gate, up and down products run as one
 *   matrix-matrix product over them (as ggml's mul_mat_id groups them,
 *   and with its sums: each token's as a one-token product);
 *   then out[t] = sum_j w_j * y[t, j] in slot order, as llama.cpp adds
 *   the experts' views; qwen2moe adds its shared expert, gated by a
 *   sigmoid. Only experts with tokens are read: a decode step reads k
 *   experts' rows. Every product runs on the pool, cut into row chunks of
 *   all the active experts at once, so k small experts still keep every
 *   worker busy. All scratch is allocated at create. */
#include "runtime/cpu/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/glu.h"
#include "runtime/experts.h"
#include "runtime/cpu/pool.h"
#include "runtime/cpu/quant.h"

/* ---- routing ---- */

void
ks_moe_route(const float *logits, uint32_t n_expert, uint32_t k, bool norm,
             float *probs, int32_t *ids, float *w)
{
    float max = -INFINITY, scale;
    double sum = 0;

    /* as ggml's soft_max: the exponentials summed in double, then scaled
     * by the float reciprocal (its AVX-512 build takes its own exp for
     * runs of 16 experts; expf here) */
    for (uint32_t e = 0; e < n_expert; e++)
        if (logits[e] > max)
            max = logits[e];
    for (uint32_t e = 0; e < n_expert; e++) {
        probs[e] = expf(logits[e] - max);
        sum += (double)probs[e];
    }
    scale = (float)(1.0 / sum);
    for (uint32_t e = 0; e < n_expert; e++)
        probs[e] *= scale;
    /* selection of the k largest, k small: insertion into a sorted list */
    for (uint32_t j = 0; j < k; j++)
        ids[j] = -1;
    for (uint32_t e = 0; e < n_expert; e++) {
        uint32_t j = k;
        while (j > 0 && (ids[j - 1] < 0 || probs[e] > probs[ids[j - 1]]))
            j--;
        if (j == k)
            continue;
        memmove(ids + j + 1, ids + j, (k - j - 1) * sizeof(*ids));
        ids[j] = (int32_t)e;
    }
    sum = 0;
    for (uint32_t j = 0; j < k; j++) {
        w[j] = probs[ids[j]];
        sum += (double)w[j];
    }
    if (norm) {
        /* ggml_sum_rows (a double sum, rounded), clamped, then divided */
        float wsum = (float)sum;
        if (wsum < 6.103515625e-5f)
            wsum = 6.103515625e-5f;
        for (uint32_t j = 0; j < k; j++)
            w[j] /= wsum;
    }
}

void
ks_moe_group(const int32_t *ids, uint32_t n_tok, uint32_t k, uint32_t n_expert,
             uint32_t *offs, uint32_t *order)
{
    uint32_t n = n_tok * k;

    memset(offs, 0, (n_expert + 1) * sizeof(*offs));
    for (uint32_t i = 0; i < n; i++)
        offs[ids[i] + 1]++;
    for (uint32_t e = 0; e < n_expert; e++)
        offs[e + 1] += offs[e];
    for (uint32_t i = 0; i < n; i++)
        order[offs[ids[i]]++] = i;
    /* offs[e] now holds the end of e's run: shift back to starts */
    memmove(offs + 1, offs, n_expert * sizeof(*offs));
    offs[0] = 0;
}

/* ---- products on the pool ---- */

/* One product: y[t * ldy + r] = W row r · activation row t, for r < ne1,
 * t < n_tok, cut into chunks of chunk_rows rows. */
typedef struct mm {
    ks_qtype       type;
    const uint8_t *W;
    uint64_t       row_bytes;
    uint64_t       ne0;
    int64_t        ne1;
    const uint8_t *xq;
    uint64_t       xq_stride;
    uint32_t       n_tok;
    float         *y;
    uint64_t       ldy;
    int64_t        chunk_rows;
    int64_t        n_chunks;
    bool           as_one;   /* each token with the one-token kernel */
} mm;

typedef struct mm_job {
    mm   *list;
    int   n;
    bool  rowwise;
} mm_job;

static void
mm_worker(void *ctx, int ith, int nth)
{
    const mm_job *j = ctx;
    int64_t n_items = 0, k;

    (void)ith, (void)nth;
    for (int i = 0; i < j->n; i++)
        n_items += j->list[i].n_chunks;
    while ((k = ks_pool_claim(n_items)) >= 0) {
        int i = 0;
        while (k >= j->list[i].n_chunks)
            k -= j->list[i++].n_chunks;
        const mm *p = &j->list[i];
        int64_t r0 = k * p->chunk_rows, r1 = r0 + p->chunk_rows;
        if (r1 > p->ne1)
            r1 = p->ne1;
        if ((j->rowwise || p->as_one) && p->n_tok > 1)
            ks_cpu_matmul_rows_as_one(p->type, p->W + (uint64_t)r0 * p->row_bytes,
                                      p->row_bytes, p->ne0, p->ne1, r1 - r0, p->xq,
                                      p->xq_stride, p->n_tok, p->y + r0, p->ldy);
        else
            ks_cpu_matmul_rows(p->type, p->W + (uint64_t)r0 * p->row_bytes, p->row_bytes,
                               p->ne0, p->ne1, r1 - r0, p->xq, p->xq_stride, p->n_tok,
                               p->y + r0, p->ldy);
    }
}

/* Cuts the products into about 4 chunks per worker in all (of 16 KiB to
 * 1 MiB of weights, in multiples of 16 rows, which keep the SIMD kernels
 * on their multi-row paths) and runs them. */
static void
mm_run(ks_pool *pool, int nth, bool rowwise, mm *list, int n)
{
    uint64_t total = 0, chunk;
    mm_job j = { list, n, rowwise };

    if (n == 0)
        return;
    for (int i = 0; i < n; i++)
        total += list[i].row_bytes * (uint64_t)list[i].ne1;
    chunk = total / (uint64_t)(4 * nth);
    if (chunk < (16u << 10))
        chunk = 16u << 10;
    if (chunk > (1u << 20))
        chunk = 1u << 20;
    for (int i = 0; i < n; i++) {
        mm *p = &list[i];
        int64_t rows = (int64_t)(chunk / p->row_bytes) / 16 * 16;
        if (rows < 16)
            rows = 16;
        p->chunk_rows = rows;
        p->n_chunks = (p->ne1 + rows - 1) / rows;
    }
    if (nth == 1)
        mm_worker(&j, 0, 1);
    else
        ks_pool_run_n(pool, nth, mm_worker, &j);
}

typedef struct quant_job {
    ks_qtype     wtype;
    const float *src;
    uint64_t     ld;
    uint64_t     n;
    uint8_t     *dst;
    uint64_t     stride;
    uint32_t     n_rows;
} quant_job;

static void
quant_worker(void *ctx, int ith, int nth)
{
    const quant_job *j = ctx;
    int64_t r0, r1;

    ks_pool_range(j->n_rows, 1, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++)
        ks_cpu_quantize_act(j->wtype, j->src + (uint64_t)r * j->ld,
                            j->dst + (uint64_t)r * j->stride, j->n);
}

static void
quantize_rows(ks_pool *pool, int nth, ks_qtype wtype, const float *src, uint64_t ld,
              uint64_t n, uint32_t n_rows, uint8_t *dst, uint64_t stride)
{
    quant_job j = { wtype, src, ld, n, dst, stride, n_rows };

    if (n_rows < 4 || nth == 1)
        quant_worker(&j, 0, 1);
    else
        ks_pool_run_n(pool, nth, quant_worker, &j);
}

typedef struct glu_job {
    float       *g;
    const float *u;
    uint64_t     n_ff;
    uint64_t     n;
} glu_job;

static void
glu_worker(void *ctx, int ith, int nth)
{
    const glu_job *j = ctx;
    int64_t i0, i1;

    ks_pool_range((int64_t)j->n, 64, ith, nth, &i0, &i1);
    ks_cpu_glu_silu(j->g, j->u, j->n_ff, (uint64_t)i0, (uint64_t)i1);
}

/* ---- the layer ---- */

struct ks_moe {
    const ks_model *m;
    uint32_t  l0, l1;
    uint32_t  n_batch;
    uint32_t  n_expert, k;
    uint64_t  E;
    uint64_t  sx;          /* bytes per quantized row of n_embd */
    uint64_t  sf;          /* bytes per quantized row of the widest FFN */
    float    *logits;      /* [n_batch][n_expert] */
    float    *probs;       /* [n_expert] */
    int32_t  *ids;         /* [n_batch][k] chosen experts */
    float    *w;           /* [n_batch][k] their weights */
    uint32_t *offs;        /* [n_expert + 1] */
    uint32_t *order;       /* [n_batch * k] choice index by sorted position */
    uint32_t *pos;         /* [n_batch * k] sorted position by choice index */
    float    *xs;          /* [n_batch * k][n_embd] inputs in sorted order */
    uint8_t  *xq_a;        /* [n_batch * k][sx] for the gate weights */
    uint8_t  *xq_b;        /* [n_batch * k][sx] for the up weights */
    uint8_t  *xq_s;        /* [n_batch][sx] for the shared expert's gate */
    float    *g, *u;       /* [n_batch * k][n_ff] */
    uint8_t  *hq;          /* [n_batch * k][sf] */
    float    *y;           /* [n_batch * (k + 1)][n_embd] expert outputs, then
                              the shared expert's */
    float    *sg;          /* [n_batch] shared expert gate logits */
    mm       *list;        /* [2 * n_expert + 2] */
    /* expert placement (the model's store, or NULL) */
    ks_xstore *xstore;
    uint32_t *xids;        /* [n_expert] the experts a batch uses */
    uint32_t *xuses;       /* [n_expert] their choices */
    ks_xptr  *xp;          /* [n_expert] where each is read, by expert */
    uint8_t  *mark;        /* [n_expert] */
    int32_t  *pids;        /* [k] a predicted choice */
    float    *pw;          /* [k] */
    uint64_t *hits;        /* [l1 - l0][n_expert] */
    uint64_t  last_bytes;
};

ks_status
ks_moe_create(const ks_model *m, uint32_t l0, uint32_t l1, uint32_t n_batch, ks_moe **out)
{
    const ks_hparams *hp = &m->hp;
    ks_moe *mo = calloc(1, sizeof(*mo));
    uint64_t F = hp->n_ff_exp > hp->n_ff_shexp ? hp->n_ff_exp : hp->n_ff_shexp;
    uint64_t R = (uint64_t)n_batch * hp->n_expert_used;

    *out = NULL;
    if (!mo)
        return ks_error(KS_ERR_NOMEM, "moe: no memory");
    mo->m = m;
    mo->l0 = l0;
    mo->l1 = l1;
    mo->n_batch = n_batch;
    mo->n_expert = hp->n_expert;
    mo->k = hp->n_expert_used;
    mo->E = hp->n_embd;
    /* an f32 row is the widest activation format */
    mo->sx = ks_align_up(4 * mo->E, 64);
    mo->sf = ks_align_up(4 * F, 64);
    mo->logits = calloc((uint64_t)n_batch * mo->n_expert, sizeof(float));
    mo->probs = calloc(mo->n_expert, sizeof(float));
    mo->ids = calloc(R, sizeof(int32_t));
    mo->w = calloc(R, sizeof(float));
    mo->offs = calloc(mo->n_expert + 1, sizeof(uint32_t));
    mo->order = calloc(R, sizeof(uint32_t));
    mo->pos = calloc(R, sizeof(uint32_t));
    mo->xs = calloc(R * mo->E, sizeof(float));
    mo->xq_a = calloc(R, mo->sx);
    mo->xq_b = calloc(R, mo->sx);
    mo->xq_s = calloc(n_batch, mo->sx);
    mo->g = calloc(R * F, sizeof(float));
    mo->u = calloc(R * F, sizeof(float));
    mo->hq = calloc(R, mo->sf);
    mo->y = calloc((R + n_batch) * mo->E, sizeof(float));
    mo->sg = calloc(n_batch, sizeof(float));
    mo->list = calloc(2 * (uint64_t)mo->n_expert + 2, sizeof(mm));
    mo->hits = calloc((uint64_t)(l1 - l0) * mo->n_expert + 1, sizeof(uint64_t));
    mo->xstore = m->xstore;
    mo->xids = calloc(mo->n_expert, sizeof(uint32_t));
    mo->xuses = calloc(mo->n_expert, sizeof(uint32_t));
    mo->xp = calloc(mo->n_expert, sizeof(ks_xptr));
    mo->mark = calloc(mo->n_expert, 1);
    mo->pids = calloc(mo->k, sizeof(int32_t));
    mo->pw = calloc(mo->k, sizeof(float));
    if (!mo->xids || !mo->xuses || !mo->xp || !mo->mark || !mo->pids || !mo->pw ||
        !mo->logits || !mo->probs || !mo->ids || !mo->w || !mo->offs || !mo->order ||
        !mo->pos || !mo->xs || !mo->xq_a || !mo->xq_b || !mo->xq_s || !mo->g || !mo->u ||
        !mo->hq || !mo->y || !mo->sg || !mo->list || !mo->hits) {
        ks_moe_destroy(mo);
        return ks_error(KS_ERR_NOMEM, "moe: no memory for the expert scratch of a batch "
                        "of %u tokens", n_batch);
    }
    *out = mo;
    return KS_OK;
}

void
ks_moe_destroy(ks_moe *mo)
{
    if (!mo)
        return;
    free(mo->logits);
    free(mo->probs);
    free(mo->ids);
    free(mo->w);
    free(mo->offs);
    free(mo->order);
    free(mo->pos);
    free(mo->xs);
    free(mo->xq_a);
    free(mo->xq_b);
    free(mo->xq_s);
    free(mo->g);
    free(mo->u);
    free(mo->hq);
    free(mo->y);
    free(mo->sg);
    free(mo->list);
    free(mo->hits);
    free(mo->xids);
    free(mo->xuses);
    free(mo->xp);
    free(mo->mark);
    free(mo->pids);
    free(mo->pw);
    free(mo);
}

const uint64_t *
ks_moe_hits(const ks_moe *mo, uint32_t il)
{
    return mo->hits + (uint64_t)(il - mo->l0) * mo->n_expert;
}

uint64_t
ks_moe_last_bytes(const ks_moe *mo)
{
    return mo->last_bytes;
}

/* Expert |e|'s matrix of a 3-D weight (e = 0 for a 2-D one) as a product
 * with |n_tok| rows of quantized input; read at |at| when not NULL (the
 * expert store's copy), else from the mapping. */
static mm
product(const ks_weight *w, uint32_t e, const uint8_t *at, const uint8_t *xq,
        uint64_t xq_stride, uint32_t n_tok, float *y, uint64_t ldy)
{
    mm p = { 0 };

    p.type = w->type;
    p.W = at ? at : (const uint8_t *)w->data + (uint64_t)e * w->ne1 * w->row_bytes;
    p.row_bytes = w->row_bytes;
    p.ne0 = w->ne0;
    p.ne1 = (int64_t)w->ne1;
    p.xq = xq;
    p.xq_stride = xq_stride;
    p.n_tok = n_tok;
    p.y = y;
    p.ldy = ldy;
    /* ggml's mul_mat_id sums every (row, token) of an expert as a
     * one-token product (vec_dot, or the repacked GEMV), whatever the
     * group's size: the same sums here, each weight block still loaded
     * once for the group */
    p.as_one = w->ne2 > 1;
    return p;
}

/* The experts' SwiGLU FFNs, y = down_e(silu(gate_e · x) * up_e · x), for
 * the groups of rows [offs[e], offs[e + 1]) of x (n rows in all, ldx
 * apart), expert e of the weights (e = 0 and one group for 2-D weights).
 * |extra|, when not NULL, runs beside the gate and up products; |xp|,
 * when not NULL, says where expert e's matrices are read (xp[e]). */
static void
run_ffn(ks_moe *mo, ks_pool *pool, int nth, bool rowwise, const ks_weight *gate,
        const ks_weight *up, const ks_weight *down, const float *x, uint64_t ldx,
        uint32_t n, const uint32_t *offs, uint32_t n_groups, const mm *extra,
        const ks_xptr *xp, float *y)
{
    uint64_t F = gate->ne1, E = mo->E;
    const uint8_t *xq_up = mo->xq_a;
    int n_mm = 0;

    quantize_rows(pool, nth, gate->type, x, ldx, E, n, mo->xq_a, mo->sx);
    if (ks_cpu_act_type(up->type) != ks_cpu_act_type(gate->type)) {
        quantize_rows(pool, nth, up->type, x, ldx, E, n, mo->xq_b, mo->sx);
        xq_up = mo->xq_b;
    }
    for (uint32_t e = 0; e < n_groups; e++) {
        uint32_t r0 = offs[e], cnt = offs[e + 1] - offs[e];
        if (cnt == 0)
            continue;
        mo->list[n_mm++] = product(gate, e, xp ? xp[e].gate : NULL,
                                   mo->xq_a + r0 * mo->sx, mo->sx, cnt, mo->g + r0 * F, F);
        mo->list[n_mm++] = product(up, e, xp ? xp[e].up : NULL, xq_up + r0 * mo->sx,
                                   mo->sx, cnt, mo->u + r0 * F, F);
        mo->last_bytes += 2 * F * gate->row_bytes + E * down->row_bytes;
    }
    if (extra)
        mo->list[n_mm++] = *extra;
    mm_run(pool, nth, rowwise, mo->list, n_mm);
    {
        glu_job gj = { mo->g, mo->u, F, (uint64_t)n * F };
        if (gj.n < 4096 || nth == 1)
            glu_worker(&gj, 0, 1);
        else
            ks_pool_run_n(pool, nth, glu_worker, &gj);
    }
    quantize_rows(pool, nth, down->type, mo->g, F, F, n, mo->hq, mo->sf);
    n_mm = 0;
    for (uint32_t e = 0; e < n_groups; e++) {
        uint32_t r0 = offs[e], cnt = offs[e + 1] - offs[e];
        if (cnt == 0)
            continue;
        mo->list[n_mm++] = product(down, e, xp ? xp[e].down : NULL,
                                   mo->hq + r0 * mo->sf, mo->sf, cnt, y + r0 * E, E);
    }
    mm_run(pool, nth, rowwise, mo->list, n_mm);
}

/* The expert store reads ahead the experts that layer il + 1 will likely
 * choose: its router applied to this layer's input (the residual stream
 * changes little from one layer to the next), each token's top k. Runs
 * before run_ffn reuses xq_a, which holds xn quantized for this router. */
static void
predict_next(ks_moe *mo, const ks_layer *L, ks_pool *pool, int nth, bool rowwise,
             const float *xn, uint64_t ldx, uint32_t n_tok)
{
    const ks_layer *N = L + 1;
    uint32_t il = (uint32_t)(N - mo->m->layers), X = mo->n_expert, k = mo->k, n = 0;
    const uint8_t *xq = mo->xq_a;
    mm router;

    if (il >= mo->l1 || !N->gate_inp.data)
        return;
    if (ks_cpu_act_type(N->gate_inp.type) != ks_cpu_act_type(L->gate_inp.type)) {
        quantize_rows(pool, nth, N->gate_inp.type, xn, ldx, mo->E, n_tok, mo->xq_b, mo->sx);
        xq = mo->xq_b;
    }
    router = product(&N->gate_inp, 0, NULL, xq, mo->sx, n_tok, mo->logits, X);
    mm_run(pool, nth, rowwise, &router, 1);
    memset(mo->mark, 0, X);
    for (uint32_t t = 0; t < n_tok; t++) {
        ks_moe_route(mo->logits + (uint64_t)t * X, X, k, false, mo->probs, mo->pids, mo->pw);
        for (uint32_t j = 0; j < k; j++)
            if (!mo->mark[mo->pids[j]]) {
                mo->mark[mo->pids[j]] = 1;
                mo->xids[n++] = (uint32_t)mo->pids[j];
            }
    }
    ks_xstore_prefetch(mo->xstore, il, mo->xids, n);
}

void
ks_moe_ffn(ks_moe *mo, const ks_layer *L, ks_pool *pool, int nth, bool rowwise,
           const float *xn, uint64_t ldx, uint32_t n_tok, float *out, uint64_t ldo)
{
    uint32_t k = mo->k, X = mo->n_expert, n = n_tok * k;
    uint64_t E = mo->E;
    uint32_t il = (uint32_t)(L - mo->m->layers), n_act = 0;
    uint64_t *hits = mo->hits + (uint64_t)(il - mo->l0) * X;
    mm router;

    /* the router: logits [n_tok][n_expert] */
    quantize_rows(pool, nth, L->gate_inp.type, xn, ldx, E, n_tok, mo->xq_a, mo->sx);
    router = product(&L->gate_inp, 0, NULL, mo->xq_a, mo->sx, n_tok, mo->logits, X);
    mo->last_bytes = X * L->gate_inp.row_bytes;
    mm_run(pool, nth, rowwise, &router, 1);
    for (uint32_t t = 0; t < n_tok; t++) {
        ks_moe_route(mo->logits + (uint64_t)t * X, X, k, mo->m->hp.moe_norm_w, mo->probs,
                     mo->ids + (uint64_t)t * k, mo->w + (uint64_t)t * k);
        for (uint32_t j = 0; j < k; j++)
            hits[mo->ids[t * k + j]]++;
    }
    ks_moe_group(mo->ids, n_tok, k, X, mo->offs, mo->order);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = mo->order[i];
        mo->pos[c] = i;
        memcpy(mo->xs + (uint64_t)i * E, xn + (uint64_t)(c / k) * ldx, E * sizeof(float));
    }
    if (mo->xstore) {
        predict_next(mo, L, pool, nth, rowwise, xn, ldx, n_tok);
        n_act = 0;
        for (uint32_t e = 0; e < X; e++)
            if (mo->offs[e + 1] > mo->offs[e]) {
                mo->xids[n_act] = e;
                mo->xuses[n_act++] = mo->offs[e + 1] - mo->offs[e];
            }
        /* xp is indexed by expert: begin fills the first n_act, then
         * they move to their experts' places (from the last down, as
         * xids[i] >= i) */
        ks_xstore_begin(mo->xstore, il, mo->xids, mo->xuses, n_act, n_tok, mo->xp);
        for (uint32_t i = n_act; i-- > 0;)
            mo->xp[mo->xids[i]] = mo->xp[i];
    }
    run_ffn(mo, pool, nth, rowwise, &L->gate_exps, &L->up_exps, &L->down_exps, mo->xs, E,
            n, mo->offs, X, NULL, mo->xstore ? mo->xp : NULL, mo->y);
    if (mo->xstore)
        ks_xstore_end(mo->xstore, il, mo->xids, n_act);
    if (L->gate_inp_shexp.data) {
        /* qwen2moe's shared expert for every token, scaled by
         * sigmoid(gate_inp_shexp · x), computed as llama.cpp does:
         * silu(v) / v */
        uint32_t offs[2] = { 0, n_tok };
        mm gate;
        quantize_rows(pool, nth, L->gate_inp_shexp.type, xn, ldx, E, n_tok, mo->xq_s,
                      mo->sx);
        gate = product(&L->gate_inp_shexp, 0, NULL, mo->xq_s, mo->sx, n_tok, mo->sg, 1);
        run_ffn(mo, pool, nth, rowwise, &L->gate_shexp, &L->up_shexp, &L->down_shexp, xn,
                ldx, n_tok, offs, 1, &gate, NULL, mo->y + (uint64_t)n * E);
        mo->last_bytes += L->gate_inp_shexp.row_bytes;
    }
    /* weighted, then added in slot order as llama.cpp adds the views */
    for (uint32_t t = 0; t < n_tok; t++) {
        float *o = out + (uint64_t)t * ldo;
        for (uint32_t j = 0; j < k; j++) {
            const float *yj = mo->y + (uint64_t)mo->pos[t * k + j] * E;
            float wj = mo->w[t * k + j];
            if (j == 0)
                for (uint64_t i = 0; i < E; i++)
                    o[i] = yj[i] * wj;
            else
                for (uint64_t i = 0; i < E; i++)
                    o[i] += yj[i] * wj;
        }
    }
    if (L->gate_inp_shexp.data)
        for (uint32_t t = 0; t < n_tok; t++) {
            float v = mo->sg[t], s = v / (1.0f + expf(-v));
            float gv = v != 0.0f ? s / v : 0.5f;
            float *o = out + (uint64_t)t * ldo;
            const float *ys = mo->y + (uint64_t)(n + t) * E;
            for (uint64_t i = 0; i < E; i++)
                o[i] += ys[i] * gv;
        }
}
