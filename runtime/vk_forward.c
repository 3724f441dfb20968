/* The transformer on a Vulkan device (see vk_forward.h).
 *
 * The layer compiler: each layer is lowered to this program of fused
 * kernels (one dispatch each; barriers only where a kernel reads what the
 * one before wrote):
 *   norm      [post-norm + residual add of the previous block +] rmsnorm,
 *             rounding into the activation formats of the QKV weights
 *   matvec    q, k, v (+ bias)                   (no barrier between them)
 *   rope      QK-norm + rotary embedding + KV append (fp16)
 *   attn      causal / sliding-window attention over the cache
 *   quant     the attention output into the output projection's format
 *   matvec    output projection (+ residual add into x, llama/qwen)
 *   norm      [post-norm + residual add +] rmsnorm → gate/up formats
 *   matvec    gate, up
 *   glu       activation * up → the down projection's format
 *   matvec    down (+ residual add into x, llama/qwen)
 * A mixture-of-experts layer (qwen3moe, olmoe, qwen2moe; exact kernels
 * only) replaces gate .. down with
 *   matvec    router logits
 *   moe       routing: softmax, top-k, weights → expert ids and weights
 *             in device buffers (shaders/moe.comp)
 *   matvec    gate, up of each token's k experts (the exact kernel's
 *             expert variant reads the ids), qwen2moe's shared expert
 *             and its gate
 *   glu       per (token, expert) row, and the shared expert's
 *   matvec    down of each expert (and the shared one)
 *   moe       weighted sum in slot order (+ gated shared expert) + residual
 * with no round trip to the host; olmoe's whole-row QK-norm runs as a
 * norm in place after the q/k products.
 * and the head: norm of the last token → matvec of the output weights
 * into a host-visible logits buffer. Each kernel variant is generated
 * from its template by defines (activation formats, epilogues, QK-norm,
 * rope convention, activation) and fetched through the SPIR-V disk cache
 * (ks_vk_shader_get); pipelines go through the context's pipeline cache.
 *
 * Per batch size the whole range is recorded once and replayed, as whole
 * layers cut into submissions of bounded work (so that no submission runs
 * long on a slow device, and each fence timeout fits its work); what
 * changes between runs (the first position, the rope table, the input
 * rows) is written by the host into mapped buffers first. All buffers are
 * bound whole; offsets and strides are push constants fixed at recording.
 * Kernels are built together on a thread pool at set-up (the warm start
 * is mostly the driver's compiles); KESTREL_PROFILE=1 adds timestamps
 * around every dispatch. */
#include "runtime/vk_forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/quant.h"
#include "runtime/cpu/quant_priv.h"
#include "runtime/cpu/rope.h"
#include "runtime/session_priv.h"
#include "scheduler/profile.h"
#include "scheduler/target.h"

#include "driver/vk.h"
#include "driver/vk_exact.h"
#include "driver/vk_matvec.h"
#include "driver/vk_submit.h"

/* Activation formats as shaders/common/actq.glsl numbers them. */
enum { FMT_F32 = 0, FMT_F16, FMT_BF16, FMT_Q8_0, FMT_Q8_1, FMT_Q8_K, N_FMT };

enum {
    MAX_HD = 512,      /* attn.comp / rope.comp KS_MAX_HD */
    WG_ROW = 64,       /* lanes of norm / quant / glu */
    WG_HEAD = 32,      /* lanes of rope / attn */
    N_CMD = 4,         /* recorded batch sizes kept */
    MAX_PIPES = 48,
    ATTN_TILED_MIN = 64,  /* batches the CPU attends with f32 tiles */
    /* attn.comp walks every key of a query in one invocation; lavapipe
     * ends an invocation's loops after 65,535 trips in all */
    MAX_CTX_KEYS = 32768,
    MAX_EXPERT_USED = 16,  /* moe.comp KS_MAX_K */
};

typedef struct pipe {
    char            key[160];
    ks_vk_pipeline *pl;
} pipe;

typedef struct mat {
    const ks_weight *w;
    ks_vk_buffer     buf;
    ks_vk_buffer     bias;
    ks_vk_matvec    *mv;     /* the fast kernel, or */
    ks_vk_exact     *ek;     /* the CPU's summation order */
    uint64_t         w_off;  /* bytes: row 0 in buf (imported weights) */
    VkDescriptorSet  set;
    uint32_t         fmt;
    bool             shared;  /* buf belongs to another mat (tied output) */
} mat;

typedef struct vec {
    ks_vk_buffer buf;  /* an f32 norm weight; size 0: absent */
} vec;

/* A mixture-of-experts FFN (qwen3moe, olmoe, qwen2moe): the router, the
 * routed experts (3-D weights, read through the exact kernel's expert
 * variant with the ids the routing kernel wrote) and qwen2moe's shared
 * expert with its gate. */
typedef struct moe_layer {
    mat router, gate, up, down;
    mat sh_inp, sh_gate, sh_up, sh_down;  /* sh_inp.w NULL: none */
    VkDescriptorSet set_route, set_glu_sh, set_combine;
    ks_vk_pipeline *route, *glu_sh, *combine;
} moe_layer;

typedef struct layer {
    mat q, k, v, o, gate, up, down;
    moe_layer moe;   /* moe.router.w NULL: a dense FFN */
    vec attn_norm, q_norm, k_norm, post_attn, ffn_norm, post_ffw;
    ks_vk_buffer kc, vc;
    uint64_t     w_bytes;  /* its seven matrices' weights */
    VkDescriptorSet set_norm_attn, set_rope, set_attn, set_quant_att;
    VkDescriptorSet set_norm_ffn, set_glu, set_norm_end;
    /* olmoe: QK-norm over whole q and k rows (norm.comp in place), not
     * per head in the rope kernel */
    VkDescriptorSet set_qn_full, set_kn_full;
    ks_vk_pipeline *qk_full;
    ks_vk_pipeline *norm_attn, *rope, *attn, *attn_f32, *quant_att;
    ks_vk_pipeline *norm_ffn, *glu, *norm_end;
    uint32_t qkv_fmt[2];  /* formats the QKV weights read (second: N_FMT none) */
    uint32_t ffn_fmt[2];
} layer;

/* One recording: the range's work for a batch of n, cut into submissions
 * of bounded work (whole layers each), submitted in order. */
typedef struct cmd {
    ks_vk_cmdbuf *cbs;       /* [cap]; the first n_cbs hold the recording */
    uint32_t      n_cbs, cap;
    uint32_t      n;
    bool          head;
    bool          recorded;
    uint64_t      used;
    /* profiling: two timestamps around each dispatch, and what each pair
     * measures */
    VkQueryPool        qpool;
    ks_vk_fw_prof_rec *marks;  /* [cap_marks] */
    uint64_t          *ticks;  /* [2 * cap_marks] */
    uint32_t           n_marks, cap_marks;
} cmd;

/* Op kinds as the profile names them. */
enum {
    OP_NORM_ATTN, OP_Q, OP_K, OP_V, OP_ROPE, OP_ATTN, OP_QUANT, OP_O, OP_NORM_FFN, OP_GATE,
    OP_UP, OP_GLU, OP_DOWN, OP_NORM_END, OP_NORM_HEAD, OP_HEAD, N_OPS
};
static const char *const op_names[N_OPS] = {
    "attn norm", "q", "k", "v", "rope", "attn", "quant", "o", "ffn norm", "gate", "up", "glu",
    "down", "end norm", "head norm", "head",
};
/* The session profile's op of each (the CPU target's kinds): the
 * quantization of the attention output feeds the output product. */
static const ks_prof_op op_prof[N_OPS] = {
    KS_PROF_NORM, KS_PROF_QKV, KS_PROF_QKV, KS_PROF_QKV, KS_PROF_ROPE_KV, KS_PROF_ATTN,
    KS_PROF_ATTN_OUT, KS_PROF_ATTN_OUT, KS_PROF_NORM, KS_PROF_GATE_UP, KS_PROF_GATE_UP,
    KS_PROF_ACT, KS_PROF_DOWN, KS_PROF_NORM, KS_PROF_NORM, KS_PROF_HEAD,
};

/* Profile totals of one (phase, op, layer). */
typedef struct prof_acc {
    uint64_t ns, bytes, n;
} prof_acc;

struct ks_vk_fw {
    const ks_model *m;
    ks_vk_ctx      *ctx;
    ks_vk_fw_params p;
    uint32_t        E, q_dim, kv_dim, F, D;  /* D: widest activation row */
    uint32_t        nb;
    layer          *L;   /* [l1 - l0] */
    mat             out;
    vec             out_norm;
    VkDescriptorSet set_norm_head;
    ks_vk_pipeline *norm_head;
    uint32_t        head_fmt;

    ks_vk_buffer in, params, x, o, xn, q, k, v, att, g, u, xs, dummy, logits, x_out;
    /* mixture of experts: router logits and probabilities [nb][X], the
     * chosen ids and weights [nb][K], the shared gate's logits [nb],
     * expert outputs [nb * K + nb][E] (the shared expert's last) */
    ks_vk_buffer rlog, rprob, rids, rw, rsg, ye;
    uint32_t     X, K;       /* experts, used per token (0: dense) */
    uint32_t     n_rows;     /* rows of g, u, xs and the activations:
                                nb, or nb * (K + 1) with experts */
    ks_vk_buffer gelu;  /* the CPU's GELU table (GELU models only) */
    bool         exact; /* packed activations + the bit-exact matrix kernel */
    bool         fma_native;  /* the device's fma() rounds once (probed) */
    bool         import;      /* weights imported from the mapped file */
    ks_vk_buffer aq[N_FMT];
    uint64_t     cs_local_off;  /* floats: the sliding-window rope table */

    pipe    pipes[MAX_PIPES];
    int     n_pipes;
    cmd     cmds[N_CMD];
    uint64_t n_runs;
    uint64_t      submit_macs; /* most work one submission may carry */
    bool          prof;        /* KESTREL_PROFILE: timestamps around dispatches */
    double        tick_ns;     /* timestampPeriod */
    cmd          *prof_last;   /* the latest finished run's marks */
    prof_acc     *acc;         /* [2: prefill, decode][N_OPS][n_layers + 1] */
    uint32_t      pending_pos0;
    cmd          *pending;     /* submitted, not yet finished */
    uint32_t      pending_n;
    bool          pending_head;
    ks_vk_fw_info info;
    uint64_t      busy_ns;     /* submit to finish, summed */
    uint64_t      submit_ns;   /* when the run in flight was submitted */
};

static void prof_print(const ks_vk_fw *f);

static uint32_t
fmt_of(ks_qtype w)
{
    switch (ks_cpu_act_type(w)) {
    case KS_QUANT_F32: return FMT_F32;
    case KS_QUANT_F16: return FMT_F16;
    case KS_QUANT_BF16: return FMT_BF16;
    case KS_QUANT_Q8_1: return FMT_Q8_1;
    case KS_QUANT_Q8_K: return FMT_Q8_K;
    default: return FMT_Q8_0;
    }
}

static const char *
fmt_name(uint32_t f)
{
    static const char *n[N_FMT] = { "f32", "f16", "bf16", "q8_0", "q8_1", "q8_k" };
    return f < N_FMT ? n[f] : "none";
}

/* ---- support check ---- */

static ks_status
weight_ok(const ks_weight *w)
{
    if (!w->data)
        return KS_OK;
    if (!ks_vk_matvec_supports((uint32_t)w->type))
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: tensor '%s' has type %s, which has no "
                        "Vulkan kernel", w->name, ks_qtype_name(w->type));
    if (w->ne0 % 256 != 0 && ks_cpu_act_type(w->type) == KS_QUANT_Q8_K)
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: tensor '%s' rows of %llu are not "
                        "whole 256-element blocks", w->name, (unsigned long long)w->ne0);
    return KS_OK;
}

ks_status
ks_vk_fw_supports(const ks_model *m)
{
    const ks_hparams *hp = &m->hp;
    ks_status st;

    if (hp->n_expert && ks_env_flag("KESTREL_VK_FAST"))
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: mixture-of-experts layers (%s) have "
                        "exact kernels only (KESTREL_VK_FAST is set)", m->arch_name);
    if (hp->n_expert && hp->n_expert_used > MAX_EXPERT_USED)
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: %u experts per token; the routing "
                        "kernel takes up to %d", hp->n_expert_used, MAX_EXPERT_USED);
    /* moe.comp routes a token in one invocation: about (k + 4) trips per
     * expert, under lavapipe's 65,535 loop trips */
    if (hp->n_expert && (uint64_t)hp->n_expert * (hp->n_expert_used + 4u) > 32768u)
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: %u experts with %u a token are more "
                        "than the routing kernel takes in one invocation", hp->n_expert,
                        hp->n_expert_used);
    if (hp->head_dim > MAX_HD || hp->head_dim % 2 != 0)
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: head size %u (the kernels take even "
                        "sizes up to %d)", hp->head_dim, MAX_HD);
    if ((st = weight_ok(&m->output)) != KS_OK)
        return st;
    for (uint32_t il = 0; il < hp->n_layers; il++) {
        const ks_layer *L = &m->layers[il];
        if (L->q_norm.data && (L->q_norm.ne0 != hp->head_dim || L->k_norm.ne0 != hp->head_dim) &&
            (L->q_norm.ne0 != (uint64_t)hp->n_head * hp->head_dim ||
             L->k_norm.ne0 != (uint64_t)hp->n_head_kv * hp->head_dim))
            return ks_error(KS_ERR_UNSUPPORTED, "vulkan: QK-norm weights of %llu and %llu "
                            "(%s): neither per head nor over whole rows",
                            (unsigned long long)L->q_norm.ne0,
                            (unsigned long long)L->k_norm.ne0, m->arch_name);
        const ks_weight *w[15] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down,
                                   &L->gate_inp, &L->gate_exps, &L->up_exps, &L->down_exps,
                                   &L->gate_inp_shexp, &L->gate_shexp, &L->up_shexp,
                                   &L->down_shexp };
        for (int i = 0; i < 15; i++)
            if ((st = weight_ok(w[i])) != KS_OK)
                return st;
    }
    return KS_OK;
}

const char *
ks_vk_auto_skip_reason(int32_t device)
{
    static _Thread_local char why[512];
    ks_vk_device_info *devs = NULL;
    uint32_t n = 0, pick;

    if (ks_vk_devices_list(NULL, &n) != KS_OK || n == 0)
        return "no Vulkan device";
    devs = calloc(n, sizeof(*devs));
    if (!devs || ks_vk_devices_list(devs, &n) != KS_OK ||
        ks_vk_device_choose(devs, n, device, &pick) != KS_OK) {
        free(devs);
        return "no usable Vulkan device";
    }
    if (device < 0 && devs[pick].type == KS_VK_TYPE_CPU) {
        snprintf(why, sizeof why, "the only Vulkan device is %s, a software renderer on "
                 "these same CPU cores (--backend vulkan uses it anyway)", devs[pick].name);
        free(devs);
        return why;
    }
    free(devs);
    return NULL;
}

/* ---- kernels ---- */

static ks_status
pipe_get(ks_vk_fw *f, const char *tmpl, const char *const *defs, uint32_t n_defs,
         uint32_t n_bufs, uint32_t push_bytes, uint32_t wg, ks_vk_pipeline **out)
{
    char key[160];
    size_t at = (size_t)snprintf(key, sizeof key, "%s", tmpl);
    ks_status st;

    const char *all[12];
    uint32_t n_all = 0;

    /* every template but the matrix kernels takes the numerics switches */
    for (uint32_t i = 0; i < n_defs && n_all < 10; i++)
        all[n_all++] = defs[i];
    if (f->ctx->caps.float64)
        all[n_all++] = "KS_F64";
    if (f->exact)
        all[n_all++] = "KS_AQ_PACKED";
    if (f->fma_native)
        all[n_all++] = "KS_FMA_NATIVE";
    defs = all;
    n_defs = n_all;
    for (uint32_t i = 0; i < n_defs && at < sizeof key; i++)
        at += (size_t)snprintf(key + at, sizeof key - at, " %s", defs[i]);
    for (int i = 0; i < f->n_pipes; i++)
        if (strcmp(f->pipes[i].key, key) == 0) {
            *out = f->pipes[i].pl;
            return KS_OK;
        }
    if (f->n_pipes == MAX_PIPES)
        return ks_error(KS_ERR_INTERNAL, "vulkan: more than %d kernel variants", MAX_PIPES);
    ks_vk_compile_params cp = { .name = tmpl, .defines = defs, .n_defines = n_defs };
    uint32_t spec[1] = { wg };
    ks_vk_pipeline_params pp = {
        .name = key, .n_buffers = n_bufs,
        .push_bytes = push_bytes, .spec = spec, .n_spec = 1,
        .max_sets = 3u * (f->p.l1 - f->p.l0) + 4u,
    };
    st = ks_vk_shader_pipeline_create(f->ctx, tmpl, &cp, &pp, out);
    if (st != KS_OK)
        return st;
    snprintf(f->pipes[f->n_pipes].key, sizeof f->pipes[0].key, "%s", key);
    f->pipes[f->n_pipes++].pl = *out;
    return KS_OK;
}

/* Push constants of each template (the shaders' Args blocks). */
typedef struct norm_args {
    uint32_t n, x_stride, q_stride, s_stride, tok0;
    float    eps;
} norm_args;

typedef struct quant_args {
    uint32_t n, x_stride, q_stride, s_stride, tok0;
} quant_args;

typedef struct rope_args {
    uint32_t n_head, n_head_kv, hd, n_rot, q_stride, kv_stride, cs_off, cs_stride, kv_words;
    float    eps;
} rope_args;

typedef struct attn_args {
    uint32_t n_head, n_head_kv, hd, q_stride, kv_words, n_swa;
    float    s_scale, q_scale;
} attn_args;

typedef struct route_args {
    uint32_t n_tok, n_expert, k, norm, l_stride, o_stride, tok0;
} route_args;

typedef struct combine_args {
    uint32_t n, k, y_stride, x_stride, tok0, sh_row0;
} combine_args;

/* norm.comp with the given fusion and up to two output formats
 * (N_FMT: none). */
static ks_status
norm_pipe(ks_vk_fw *f, bool post, bool add, const uint32_t fmts[2], ks_vk_pipeline **out)
{
    char d0[16], d1[16];
    const char *defs[4];
    uint32_t n = 0;

    if (post)
        defs[n++] = "KS_POST";
    if (add)
        defs[n++] = "KS_ADD";
    if (fmts[0] < N_FMT) {
        snprintf(d0, sizeof d0, "KS_FMT0=%u", fmts[0]);
        defs[n++] = d0;
    }
    if (fmts[1] < N_FMT) {
        snprintf(d1, sizeof d1, "KS_FMT1=%u", fmts[1]);
        defs[n++] = d1;
    }
    return pipe_get(f, "norm.comp", defs, n, 8, sizeof(norm_args), WG_ROW, out);
}

static ks_status
norm_set(ks_vk_fw *f, ks_vk_pipeline *pl, const vec *post, const vec *w, const uint32_t fmts[2],
         VkDescriptorSet *out)
{
    const ks_vk_buffer *b[8] = {
        &f->x, &f->o, post && post->buf.size_bytes ? &post->buf : &f->dummy, &w->buf, &f->xn,
        fmts[0] < N_FMT ? &f->aq[fmts[0]] : &f->dummy,
        fmts[1] < N_FMT ? &f->aq[fmts[1]] : &f->dummy, &f->xs,
    };
    return ks_vk_pipeline_set(f->ctx, pl, b, 8, out);
}

/* The formats the weights |w| (up to 3) read, as at most two fused
 * outputs; a third distinct format is not supported by one norm. */
static ks_status
fmts_for(const mat *const *w, int n, uint32_t out[2])
{
    out[0] = out[1] = N_FMT;
    for (int i = 0; i < n; i++) {
        uint32_t fm = w[i]->fmt;
        if (fm == out[0] || fm == out[1])
            continue;
        if (out[0] == N_FMT)
            out[0] = fm;
        else if (out[1] == N_FMT)
            out[1] = fm;
        else
            return ks_error(KS_ERR_UNSUPPORTED, "vulkan: weights '%s' read a third "
                            "activation format", w[i]->w->name);
    }
    return KS_OK;
}

/* ---- buffers ---- */

static ks_status
buf(ks_vk_fw *f, ks_vk_buffer *b, const char *name, uint64_t bytes, ks_vk_mem_kind kind)
{
    bytes = (bytes + 15u) & ~(uint64_t)15u;
    return ks_vk_buffer_init(f->ctx, name, bytes ? bytes : 16u, kind, b);
}

static ks_status
upload_vec(ks_vk_fw *f, vec *v, const ks_weight *w)
{
    ks_status st;

    if (!w->data)
        return KS_OK;
    if ((st = buf(f, &v->buf, w->name, w->ne0 * sizeof(float), KS_VK_MEM_DEVICE)) != KS_OK)
        return st;
    f->info.weight_bytes += v->buf.size_bytes;
    return ks_vk_buffer_upload(f->ctx, &v->buf, 0, w->data, w->ne0 * sizeof(float));
}

static ks_status
upload_mat(ks_vk_fw *f, mat *mt, const ks_weight *w, const ks_weight *bias)
{
    uint64_t bytes = w->row_bytes * w->ne1 * (w->ne2 ? w->ne2 : 1u);
    ks_status st;

    mt->w = w;
    mt->fmt = fmt_of(w->type);
    mt->w_off = 0;
    /* unified memory: the kernels read the mapped file itself */
    if (f->import && ks_vk_buffer_import(f->ctx, w->name, w->data, bytes, &mt->buf,
                                         &mt->w_off) == KS_OK) {
        f->info.imported_bytes += bytes;
    } else {
        if (f->import)
            ks_log(KS_LOG_DEBUG, "vulkan", "%s: %s; copying it", w->name, ks_last_error());
        if ((st = buf(f, &mt->buf, w->name, bytes, KS_VK_MEM_DEVICE)) != KS_OK)
            return st;
        if ((st = ks_vk_buffer_upload(f->ctx, &mt->buf, 0, w->data, bytes)) != KS_OK)
            return st;
        f->info.weight_bytes += mt->buf.size_bytes;
    }
    if (bias && bias->data) {
        if ((st = buf(f, &mt->bias, bias->name, bias->ne0 * 4u, KS_VK_MEM_DEVICE)) != KS_OK)
            return st;
        if ((st = ks_vk_buffer_upload(f->ctx, &mt->bias, 0, bias->data, bias->ne0 * 4u)) != KS_OK)
            return st;
    }
    return KS_OK;
}

/* The kernel and descriptor set of y = W·aq[fmt] (+ bias) (+ residual,
 * which is y itself): the exact kernel (packed activations, the CPU's
 * order) or the fast one (dequantized activations, a parallel order). */
static ks_status
mat_bind(ks_vk_fw *f, mat *mt, const ks_vk_buffer *y, bool residual)
{
    ks_status st;

    if (f->exact) {
        uint32_t flags = (mt->bias.size_bytes ? KS_VK_EXACT_BIAS : 0u) |
                         (residual ? KS_VK_EXACT_RESIDUAL : 0u);
        ks_vk_exact_bufs b = {
            .w = &mt->buf, .x = &f->aq[mt->fmt], .y = y,
            .bias = mt->bias.size_bytes ? &mt->bias : NULL,
            .residual = residual ? y : NULL,
        };
        if ((st = ks_vk_exact_get(f->ctx, (uint32_t)mt->w->type, flags, &mt->ek)) != KS_OK)
            return st;
        return ks_vk_exact_set(f->ctx, mt->ek, &b, &mt->set);
    }
    uint32_t flags = (mt->bias.size_bytes ? KS_VK_MATVEC_BIAS : 0u) |
                     (residual ? KS_VK_MATVEC_RESIDUAL : 0u) |
                     ks_vk_matvec_layout_flags(mt->w_off, mt->w->row_bytes);
    bool xsum = mt->fmt == FMT_Q8_1;

    if (xsum)
        flags |= KS_VK_MATVEC_XSUM;
    if ((st = ks_vk_matvec_pipeline_get(f->ctx, (uint32_t)mt->w->type, flags, &mt->mv)) != KS_OK)
        return st;
    ks_vk_matvec_bufs b = {
        .w = &mt->buf, .x = &f->aq[mt->fmt], .y = y,
        .bias = mt->bias.size_bytes ? &mt->bias : NULL,
        .residual = residual ? y : NULL,
        .xsum = xsum ? &f->xs : NULL,
    };
    return ks_vk_matvec_set(f->ctx, mt->mv, &b, &mt->set);
}

/* The exact kernel of a routed expert weight: token (choice) t reads
 * expert rids[t] and the activation row of its token. */
static ks_status
mat_bind_exp(ks_vk_fw *f, mat *mt, const ks_vk_buffer *y)
{
    ks_status st;
    ks_vk_exact_bufs b = { .w = &mt->buf, .x = &f->aq[mt->fmt], .y = y, .ids = &f->rids };

    if ((st = ks_vk_exact_get(f->ctx, (uint32_t)mt->w->type, KS_VK_EXACT_EXPERT,
                              &mt->ek)) != KS_OK)
        return st;
    return ks_vk_exact_set(f->ctx, mt->ek, &b, &mt->set);
}

static void
mat_fini(ks_vk_fw *f, mat *mt)
{
    if (!mt->shared)
        ks_vk_buffer_fini(f->ctx, &mt->buf);
    ks_vk_buffer_fini(f->ctx, &mt->bias);
}

/* ---- set-up ---- */

/* attn.comp: the f16 variant, or the f32 one of long batches. */
static ks_status
attn_pipe(ks_vk_fw *f, bool f32, ks_vk_pipeline **out)
{
    char lane[32];
    const char *defs[2] = { lane, "KS_ATTN_F32" };

    snprintf(lane, sizeof lane, "KS_HD_LANE=%uu", (f->m->hp.head_dim + WG_HEAD - 1) / WG_HEAD);
    return pipe_get(f, "attn.comp", defs, f32 ? 2 : 1, 5, sizeof(attn_args), WG_HEAD, out);
}

static ks_status
setup_layer(ks_vk_fw *f, uint32_t il, layer *ly)
{
    const ks_model *m = f->m;
    const ks_hparams *hp = &m->hp;
    const ks_layer *L = &m->layers[il];
    bool gemma = L->post_attn_norm.data != NULL;
    bool first = il == f->p.l0;
    char name[64];
    ks_status st;

    bool moe = L->gate_inp.data != NULL;
    moe_layer *me = &ly->moe;

    if ((st = upload_mat(f, &ly->q, &L->wq, &L->bq)) != KS_OK ||
        (st = upload_mat(f, &ly->k, &L->wk, &L->bk)) != KS_OK ||
        (st = upload_mat(f, &ly->v, &L->wv, &L->bv)) != KS_OK ||
        (st = upload_mat(f, &ly->o, &L->wo, NULL)) != KS_OK)
        return st;
    if (!moe && ((st = upload_mat(f, &ly->gate, &L->gate, NULL)) != KS_OK ||
                 (st = upload_mat(f, &ly->up, &L->up, NULL)) != KS_OK ||
                 (st = upload_mat(f, &ly->down, &L->down, NULL)) != KS_OK))
        return st;
    if (moe && ((st = upload_mat(f, &me->router, &L->gate_inp, NULL)) != KS_OK ||
                (st = upload_mat(f, &me->gate, &L->gate_exps, NULL)) != KS_OK ||
                (st = upload_mat(f, &me->up, &L->up_exps, NULL)) != KS_OK ||
                (st = upload_mat(f, &me->down, &L->down_exps, NULL)) != KS_OK))
        return st;
    if (moe && L->gate_inp_shexp.data &&
        ((st = upload_mat(f, &me->sh_inp, &L->gate_inp_shexp, NULL)) != KS_OK ||
         (st = upload_mat(f, &me->sh_gate, &L->gate_shexp, NULL)) != KS_OK ||
         (st = upload_mat(f, &me->sh_up, &L->up_shexp, NULL)) != KS_OK ||
         (st = upload_mat(f, &me->sh_down, &L->down_shexp, NULL)) != KS_OK))
        return st;
    {
        /* what a token reads: a MoE layer's k experts of its n_expert */
        const ks_weight *w[11] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up,
                                   &L->down, &L->gate_inp, &L->gate_inp_shexp,
                                   &L->gate_shexp, &L->up_shexp };
        for (int i = 0; i < 11; i++)
            if (w[i]->data)
                ly->w_bytes += w[i]->row_bytes * w[i]->ne1;
        if (L->down_shexp.data)
            ly->w_bytes += L->down_shexp.row_bytes * L->down_shexp.ne1;
        if (moe) {
            const ks_weight *x[3] = { &L->gate_exps, &L->up_exps, &L->down_exps };
            for (int i = 0; i < 3; i++)
                ly->w_bytes += x[i]->row_bytes * x[i]->ne1 * hp->n_expert_used;
        }
    }
    if ((st = upload_vec(f, &ly->attn_norm, &L->attn_norm)) != KS_OK ||
        (st = upload_vec(f, &ly->q_norm, &L->q_norm)) != KS_OK ||
        (st = upload_vec(f, &ly->k_norm, &L->k_norm)) != KS_OK ||
        (st = upload_vec(f, &ly->post_attn, &L->post_attn_norm)) != KS_OK ||
        (st = upload_vec(f, &ly->ffn_norm, &L->ffn_norm)) != KS_OK ||
        (st = upload_vec(f, &ly->post_ffw, &L->post_ffw_norm)) != KS_OK)
        return st;

    uint64_t kv_bytes = (uint64_t)f->p.n_ctx * f->kv_dim * 2u;
    snprintf(name, sizeof name, "k cache %u", il);
    if ((st = buf(f, &ly->kc, name, kv_bytes, KS_VK_MEM_DEVICE)) != KS_OK)
        return st;
    snprintf(name, sizeof name, "v cache %u", il);
    if ((st = buf(f, &ly->vc, name, kv_bytes, KS_VK_MEM_DEVICE)) != KS_OK)
        return st;
    f->info.kv_bytes += 2u * kv_bytes;

    /* matrix products; llama/qwen add the residual in the epilogue */
    if ((st = mat_bind(f, &ly->q, &f->q, false)) != KS_OK ||
        (st = mat_bind(f, &ly->k, &f->k, false)) != KS_OK ||
        (st = mat_bind(f, &ly->v, &f->v, false)) != KS_OK ||
        (st = mat_bind(f, &ly->o, gemma ? &f->o : &f->x, !gemma)) != KS_OK)
        return st;
    if (!moe && ((st = mat_bind(f, &ly->gate, &f->g, false)) != KS_OK ||
                 (st = mat_bind(f, &ly->up, &f->u, false)) != KS_OK ||
                 (st = mat_bind(f, &ly->down, gemma ? &f->o : &f->x, !gemma)) != KS_OK))
        return st;
    if (moe && ((st = mat_bind(f, &me->router, &f->rlog, false)) != KS_OK ||
                (st = mat_bind_exp(f, &me->gate, &f->g)) != KS_OK ||
                (st = mat_bind_exp(f, &me->up, &f->u)) != KS_OK ||
                (st = mat_bind_exp(f, &me->down, &f->ye)) != KS_OK))
        return st;
    if (me->sh_inp.w && ((st = mat_bind(f, &me->sh_inp, &f->rsg, false)) != KS_OK ||
                         (st = mat_bind(f, &me->sh_gate, &f->g, false)) != KS_OK ||
                         (st = mat_bind(f, &me->sh_up, &f->u, false)) != KS_OK ||
                         (st = mat_bind(f, &me->sh_down, &f->ye, false)) != KS_OK))
        return st;

    /* pre-attention norm: in gemma3 it also finishes the previous layer's
     * FFN block (post-norm + residual), unless the range starts here */
    const mat *qkv[3] = { &ly->q, &ly->k, &ly->v };
    if ((st = fmts_for(qkv, 3, ly->qkv_fmt)) != KS_OK)
        return st;
    bool fuse_prev = gemma && !first;
    if ((st = norm_pipe(f, fuse_prev, fuse_prev, ly->qkv_fmt, &ly->norm_attn)) != KS_OK)
        return st;
    if ((st = norm_set(f, ly->norm_attn, fuse_prev ? &f->L[il - 1 - f->p.l0].post_ffw : NULL,
                       &ly->attn_norm, ly->qkv_fmt, &ly->set_norm_attn)) != KS_OK)
        return st;

    /* rope + KV append */
    {
        const char *defs[2];
        uint32_t n = 0;
        if (hp->rope_neox)
            defs[n++] = "KS_NEOX";
        bool full = L->q_norm.data && L->q_norm.ne0 != hp->head_dim;
        if (L->q_norm.data && !full)
            defs[n++] = "KS_QK_NORM";
        if (full) {
            uint32_t none[2] = { N_FMT, N_FMT };
            if ((st = norm_pipe(f, false, false, none, &ly->qk_full)) != KS_OK)
                return st;
            const ks_vk_buffer *bq[8] = { &f->q, &f->dummy, &f->dummy, &ly->q_norm.buf,
                                          &f->q, &f->dummy, &f->dummy, &f->xs };
            const ks_vk_buffer *bk[8] = { &f->k, &f->dummy, &f->dummy, &ly->k_norm.buf,
                                          &f->k, &f->dummy, &f->dummy, &f->xs };
            if ((st = ks_vk_pipeline_set(f->ctx, ly->qk_full, bq, 8, &ly->set_qn_full)) != KS_OK ||
                (st = ks_vk_pipeline_set(f->ctx, ly->qk_full, bk, 8, &ly->set_kn_full)) != KS_OK)
                return st;
        }
        if ((st = pipe_get(f, "rope.comp", defs, n, 8, sizeof(rope_args), WG_HEAD,
                           &ly->rope)) != KS_OK)
            return st;
        const ks_vk_buffer *b[8] = {
            &f->q, &f->k, &f->v,
            ly->q_norm.buf.size_bytes ? &ly->q_norm.buf : &f->dummy,
            ly->k_norm.buf.size_bytes ? &ly->k_norm.buf : &f->dummy,
            &f->params, &ly->kc, &ly->vc,
        };
        if ((st = ks_vk_pipeline_set(f->ctx, ly->rope, b, 8, &ly->set_rope)) != KS_OK)
            return st;
    }
    /* attention: one set serves both variants (same bindings); the f32
     * one is made when a batch first needs it */
    {
        if ((st = attn_pipe(f, false, &ly->attn)) != KS_OK)
            return st;
        const ks_vk_buffer *b[5] = { &f->q, &ly->kc, &ly->vc, &f->att, &f->params };
        if ((st = ks_vk_pipeline_set(f->ctx, ly->attn, b, 5, &ly->set_attn)) != KS_OK)
            return st;
    }
    /* the attention output into the output projection's format */
    {
        char d0[16];
        const char *defs[1] = { d0 };
        snprintf(d0, sizeof d0, "KS_FMT0=%u", ly->o.fmt);
        if ((st = pipe_get(f, "quant.comp", defs, 1, 3, sizeof(quant_args), WG_ROW,
                           &ly->quant_att)) != KS_OK)
            return st;
        const ks_vk_buffer *b[3] = { &f->att, &f->aq[ly->o.fmt], &f->xs };
        if ((st = ks_vk_pipeline_set(f->ctx, ly->quant_att, b, 3, &ly->set_quant_att)) != KS_OK)
            return st;
    }
    /* pre-FFN norm (gemma3: post-attention norm + residual first) */
    {
        const mat *gu[2] = { &ly->gate, &ly->up };
        const mat *ex[6] = { &me->router, &me->gate, &me->up, &me->sh_inp, &me->sh_gate,
                             &me->sh_up };
        if ((st = moe ? fmts_for(ex, me->sh_inp.w ? 6 : 3, ly->ffn_fmt)
                      : fmts_for(gu, 2, ly->ffn_fmt)) != KS_OK)
            return st;
        if ((st = norm_pipe(f, gemma, gemma, ly->ffn_fmt, &ly->norm_ffn)) != KS_OK)
            return st;
        if ((st = norm_set(f, ly->norm_ffn, gemma ? &ly->post_attn : NULL, &ly->ffn_norm,
                           ly->ffn_fmt, &ly->set_norm_ffn)) != KS_OK)
            return st;
    }
    /* activation into the down projection's format (experts: the routed
     * experts' down, then the shared expert's) */
    for (int sh = 0; sh < (me->sh_inp.w ? 2 : 1); sh++) {
        char d0[16];
        const char *defs[2] = { hp->act == KS_ACT_SILU ? "KS_SILU" : "KS_GELU", d0 };
        uint32_t dfmt = sh ? me->sh_down.fmt : moe ? me->down.fmt : ly->down.fmt;
        ks_vk_pipeline **pl = sh ? &me->glu_sh : &ly->glu;
        snprintf(d0, sizeof d0, "KS_FMT0=%u", dfmt);
        if ((st = pipe_get(f, "glu.comp", defs, 2, 5, sizeof(quant_args), WG_ROW,
                           pl)) != KS_OK)
            return st;
        const ks_vk_buffer *b[5] = { &f->g, &f->u, &f->aq[dfmt], &f->xs,
                                     f->gelu.size_bytes ? &f->gelu : &f->dummy };
        if ((st = ks_vk_pipeline_set(f->ctx, *pl, b, 5,
                                     sh ? &me->set_glu_sh : &ly->set_glu)) != KS_OK)
            return st;
    }
    if (moe) {
        const char *defs[2] = { "KS_MOE_COMBINE", "KS_MOE_SHARED" };
        if ((st = pipe_get(f, "moe.comp", NULL, 0, 4, sizeof(route_args), 8,
                           &me->route)) != KS_OK)
            return st;
        const ks_vk_buffer *b[4] = { &f->rlog, &f->rids, &f->rw, &f->rprob };
        if ((st = ks_vk_pipeline_set(f->ctx, me->route, b, 4, &me->set_route)) != KS_OK)
            return st;
        if ((st = pipe_get(f, "moe.comp", defs, me->sh_inp.w ? 2 : 1, 4,
                           sizeof(combine_args), WG_ROW, &me->combine)) != KS_OK)
            return st;
        const ks_vk_buffer *c[4] = { &f->ye, &f->rw, &f->x,
                                     me->sh_inp.w ? &f->rsg : &f->dummy };
        if ((st = ks_vk_pipeline_set(f->ctx, me->combine, c, 4, &me->set_combine)) != KS_OK)
            return st;
    }
    /* gemma3, last layer of a range without the head: finish the FFN
     * block here (the norm it computes is not used) */
    if (gemma && il + 1 == f->p.l1 && !f->p.head) {
        uint32_t none[2] = { N_FMT, N_FMT };
        if ((st = norm_pipe(f, true, true, none, &ly->norm_end)) != KS_OK)
            return st;
        if ((st = norm_set(f, ly->norm_end, &ly->post_ffw, &ly->post_ffw, none,
                           &ly->set_norm_end)) != KS_OK)
            return st;
    }
    return KS_OK;
}

static ks_status
setup_head(ks_vk_fw *f)
{
    const ks_model *m = f->m;
    const ks_layer *last = &m->layers[m->hp.n_layers - 1];
    bool gemma = last->post_ffw_norm.data != NULL;
    layer *ll = &f->L[f->p.l1 - 1 - f->p.l0];
    ks_status st;

    if ((st = upload_mat(f, &f->out, &m->output, NULL)) != KS_OK)
        return st;
    if ((st = upload_vec(f, &f->out_norm, &m->output_norm)) != KS_OK)
        return st;
    if ((st = mat_bind(f, &f->out, &f->logits, false)) != KS_OK)
        return st;
    uint32_t fm[2] = { f->out.fmt, N_FMT };
    f->head_fmt = f->out.fmt;
    if ((st = norm_pipe(f, gemma, gemma, fm, &f->norm_head)) != KS_OK)
        return st;
    return norm_set(f, f->norm_head, gemma ? &ll->post_ffw : NULL, &f->out_norm, fm,
                    &f->set_norm_head);
}

static ks_status
setup_buffers(ks_vk_fw *f)
{
    uint64_t nb = f->nb, n_rot = f->m->hp.n_rot, nr = f->n_rows;
    uint64_t X = f->X ? f->X : 1u, K = f->K ? f->K : 1u;
    ks_status st;

    struct { ks_vk_buffer *b; const char *name; uint64_t bytes; ks_vk_mem_kind kind; } t[] = {
        { &f->in, "input rows", nb * f->E * 4u, KS_VK_MEM_UPLOAD },
        /* pos0, then the global and sliding-window rope tables */
        { &f->params, "run parameters", (4u + 2u * nb * n_rot) * 4u, KS_VK_MEM_UPLOAD },
        { &f->x, "hidden state", nb * f->E * 4u, KS_VK_MEM_DEVICE },
        { &f->o, "block output", nb * f->E * 4u, KS_VK_MEM_DEVICE },
        { &f->xn, "normed state", nb * f->E * 4u, KS_VK_MEM_DEVICE },
        { &f->q, "queries", nb * f->q_dim * 4u, KS_VK_MEM_DEVICE },
        { &f->k, "keys", nb * f->kv_dim * 4u, KS_VK_MEM_DEVICE },
        { &f->v, "values", nb * f->kv_dim * 4u, KS_VK_MEM_DEVICE },
        { &f->att, "attention output", nb * f->q_dim * 4u, KS_VK_MEM_DEVICE },
        { &f->g, "ffn gate", nr * f->F * 4u, KS_VK_MEM_DEVICE },
        { &f->u, "ffn up", nr * f->F * 4u, KS_VK_MEM_DEVICE },
        { &f->xs, "q8_1 block sums", nr * (f->D / 32u) * 4u, KS_VK_MEM_DEVICE },
        { &f->rlog, "router logits", f->X ? nb * X * 4u : 0u, KS_VK_MEM_DEVICE },
        { &f->rprob, "router probabilities", f->X ? nb * X * 4u : 0u, KS_VK_MEM_DEVICE },
        { &f->rids, "expert ids", f->X ? nb * K * 4u : 0u, KS_VK_MEM_DEVICE },
        { &f->rw, "expert weights", f->X ? nb * K * 4u : 0u, KS_VK_MEM_DEVICE },
        { &f->rsg, "shared expert gate", f->X ? nb * 4u : 0u, KS_VK_MEM_DEVICE },
        { &f->ye, "expert outputs", f->X ? nr * f->E * 4u : 0u, KS_VK_MEM_DEVICE },
        { &f->dummy, "unused binding", 16u, KS_VK_MEM_DEVICE },
        { &f->x_out, "output rows", nb * f->E * 4u, KS_VK_MEM_READBACK },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if ((st = buf(f, t[i].b, t[i].name, t[i].bytes, t[i].kind)) != KS_OK)
            return st;
    if (f->p.head &&
        (st = buf(f, &f->logits, "logits", (uint64_t)f->m->hp.n_vocab * 4u,
                  KS_VK_MEM_READBACK)) != KS_OK)
        return st;
    for (uint32_t i = 0; i < N_FMT; i++) {
        char name[32];
        snprintf(name, sizeof name, "activations %s", fmt_name(i));
        if ((st = buf(f, &f->aq[i], name, nr * f->D * 4u, KS_VK_MEM_DEVICE)) != KS_OK)
            return st;
    }
    f->cs_local_off = 4u + nb * n_rot;
    if (f->m->hp.act == KS_ACT_GELU_TANH) {
        if ((st = buf(f, &f->gelu, "gelu table", 2u << 16, KS_VK_MEM_DEVICE)) != KS_OK ||
            (st = ks_vk_buffer_upload(f->ctx, &f->gelu, 0, ks_gelu_table(), 2u << 16)) != KS_OK)
            return st;
    }
    return KS_OK;
}

/* The most work (multiply-adds, as the fence timeouts count it) one
 * submission may carry, so that none runs for long: about a second of
 * lavapipe's exact kernels on two cores for a software device (a 512-token
 * prefill of SmolLM2-135M goes as one submission per layer), ten times
 * that for a GPU. KESTREL_VK_SUBMIT_MACS overrides it (tests cut small
 * models into many submissions with it). */
static uint64_t
submit_budget(const ks_vk_ctx *ctx)
{
    const char *env = ks_env_str("KESTREL_VK_SUBMIT_MACS");
    uint64_t macs = ctx->info.type == KS_VK_TYPE_CPU ? 2000000000ull : 20000000000ull;

    if (env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end == '\0' && v > 0)
            macs = v;
        else
            ks_log(KS_LOG_WARN, "vulkan", "KESTREL_VK_SUBMIT_MACS=%s is not a positive "
                   "count; using %llu", env, (unsigned long long)macs);
    }
    return macs;
}

ks_status
ks_vk_fw_create(const ks_model *m, const ks_vk_fw_params *p, ks_vk_fw **out)
{
    const ks_hparams *hp = &m->hp;
    uint64_t t0 = ks_now_ns();
    ks_vk_fw *f;
    ks_status st;

    *out = NULL;
    if (p->l0 >= p->l1 || p->l1 > hp->n_layers || (p->head && p->l1 != hp->n_layers) ||
        p->n_batch == 0 || p->n_ctx == 0)
        return ks_error(KS_ERR_INVALID_ARG, "vulkan: layer range [%u, %u) of %u, head %d, "
                        "batch %u, context %u", p->l0, p->l1, hp->n_layers, p->head,
                        p->n_batch, p->n_ctx);
    if (p->n_ctx > MAX_CTX_KEYS)
        return ks_error(KS_ERR_UNSUPPORTED, "vulkan: context of %u tokens; the attention "
                        "kernel takes up to %d", p->n_ctx, MAX_CTX_KEYS);
    if ((st = ks_vk_fw_supports(m)) != KS_OK)
        return st;
    f = calloc(1, sizeof(*f));
    if (!f)
        return ks_error(KS_ERR_NOMEM, "vulkan: no memory");
    f->m = m;
    f->p = *p;
    f->nb = p->n_batch;
    f->E = hp->n_embd;
    f->q_dim = hp->n_head * hp->head_dim;
    f->kv_dim = hp->n_head_kv * hp->head_dim;
    f->F = hp->n_ff;
    f->n_rows = p->n_batch;
    if (hp->n_expert) {
        f->X = hp->n_expert;
        f->K = hp->n_expert_used;
        f->n_rows = p->n_batch * (f->K + 1u);
        if (hp->n_ff_exp > f->F)
            f->F = hp->n_ff_exp;
        if (hp->n_ff_shexp > f->F)
            f->F = hp->n_ff_shexp;
    }
    f->D = f->E > f->q_dim ? f->E : f->q_dim;
    if (f->F > f->D)
        f->D = f->F;
    f->D = (f->D + 255u) & ~255u;
    f->L = calloc(p->l1 - p->l0, sizeof(*f->L));
    if (!f->L) {
        free(f);
        return ks_error(KS_ERR_NOMEM, "vulkan: no memory");
    }

    /* the CPU's summation order unless asked for the fast kernels */
    f->exact = !ks_env_flag("KESTREL_VK_FAST");
    ks_vk_ctx_params cp = { .force_device = p->device >= 0,
                            .device_index = p->device >= 0 ? (uint32_t)p->device : 0 };
    if ((st = ks_vk_ctx_create(&cp, &f->ctx)) != KS_OK)
        goto fail;
    snprintf(f->info.device, sizeof f->info.device, "%s", f->ctx->info.name);
    {
        ks_vk_type t = f->ctx->info.type;
        f->import = f->ctx->caps.external_memory_host && !ks_env_flag("KESTREL_VK_NO_IMPORT") &&
                    (t == KS_VK_TYPE_INTEGRATED || t == KS_VK_TYPE_CPU);
    }
    if (f->exact) {
        /* the exact kernels probe whether fma() rounds once here; the op
         * kernels then use it directly instead of emulating it */
        if ((st = ks_vk_exact_fma(f->ctx, &f->fma_native)) != KS_OK)
            goto fail;
    }
    /* the kernels' driver compiles run together on a thread pool once
     * every one is known (most of a warm start on lavapipe) */
    ks_vk_pipelines_defer(f->ctx);
    if ((st = setup_buffers(f)) != KS_OK)
        goto fail;
    for (uint32_t il = p->l0; il < p->l1; il++)
        if ((st = setup_layer(f, il, &f->L[il - p->l0])) != KS_OK)
            goto fail;
    if (p->head && (st = setup_head(f)) != KS_OK)
        goto fail;
    if ((st = ks_vk_pipelines_finish(f->ctx, 0)) != KS_OK)
        goto fail;
    f->submit_macs = submit_budget(f->ctx);
    if (ks_env_flag("KESTREL_PROFILE") || p->profile) {
        VkPhysicalDeviceProperties pr;
        vkGetPhysicalDeviceProperties(f->ctx->phys, &pr);
        f->tick_ns = pr.limits.timestampPeriod;
        f->acc = calloc(2u * N_OPS * (hp->n_layers + 1u), sizeof(*f->acc));
        f->prof = f->acc != NULL && pr.limits.timestampComputeAndGraphics;
        if (!f->prof)
            ks_log(KS_LOG_WARN, "vulkan", "KESTREL_PROFILE: %s has no timestamps on its "
                   "queues; not profiled", f->info.device);
    }
    f->info.n_shader_hits = f->ctx->n_shader_hits;
    f->info.n_shader_compiled = f->ctx->n_shader_compiled;
    f->info.setup_ms = (double)(ks_now_ns() - t0) / 1e6;
    ks_log(KS_LOG_INFO, "vulkan", "%s: layers %u..%u%s, %s kernels, %.1f MB of weights "
           "copied, %.1f MB read in place from the file, %.1f MB of KV cache, %d kernel "
           "variants (%u from the disk cache, %u compiled), ready in %.0f ms", f->info.device,
           p->l0, p->l1 - 1, p->head ? " + head" : "", f->exact ? "exact" : "fast",
           (double)f->info.weight_bytes / 1e6, (double)f->info.imported_bytes / 1e6, (double)f->info.kv_bytes / 1e6, f->n_pipes,
           f->info.n_shader_hits, f->info.n_shader_compiled, f->info.setup_ms);
    *out = f;
    return KS_OK;
fail:
    ks_vk_fw_destroy(f);
    return st;
}

void
ks_vk_fw_destroy(ks_vk_fw *f)
{
    if (!f)
        return;
    if (f->ctx) {
        vkDeviceWaitIdle(f->ctx->device);
        if (f->prof && ks_env_flag("KESTREL_PROFILE"))
            prof_print(f);
        for (int i = 0; i < N_CMD; i++) {
            cmd *c = &f->cmds[i];
            for (uint32_t j = 0; j < c->cap; j++)
                ks_vk_cmdbuf_fini(f->ctx, &c->cbs[j]);
            free(c->cbs);
            if (c->qpool)
                vkDestroyQueryPool(f->ctx->device, c->qpool, NULL);
            free(c->marks);
            free(c->ticks);
        }
        for (uint32_t i = 0; f->L && i < f->p.l1 - f->p.l0; i++) {
            layer *ly = &f->L[i];
            mat *ms[7] = { &ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down };
            vec *vs[6] = { &ly->attn_norm, &ly->q_norm, &ly->k_norm, &ly->post_attn,
                           &ly->ffn_norm, &ly->post_ffw };
            mat *mo[8] = { &ly->moe.router, &ly->moe.gate, &ly->moe.up, &ly->moe.down,
                           &ly->moe.sh_inp, &ly->moe.sh_gate, &ly->moe.sh_up,
                           &ly->moe.sh_down };
            for (int j = 0; j < 7; j++)
                mat_fini(f, ms[j]);
            for (int j = 0; j < 8; j++)
                mat_fini(f, mo[j]);
            for (int j = 0; j < 6; j++)
                ks_vk_buffer_fini(f->ctx, &vs[j]->buf);
            ks_vk_buffer_fini(f->ctx, &ly->kc);
            ks_vk_buffer_fini(f->ctx, &ly->vc);
        }
        mat_fini(f, &f->out);
        ks_vk_buffer_fini(f->ctx, &f->out_norm.buf);
        ks_vk_buffer *bs[] = { &f->in, &f->params, &f->x, &f->o, &f->xn, &f->q, &f->k, &f->v,
                               &f->att, &f->g, &f->u, &f->xs, &f->dummy, &f->logits,
                               &f->x_out, &f->gelu, &f->rlog, &f->rprob, &f->rids, &f->rw,
                               &f->rsg, &f->ye };
        for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
            ks_vk_buffer_fini(f->ctx, bs[i]);
        for (int i = 0; i < N_FMT; i++)
            ks_vk_buffer_fini(f->ctx, &f->aq[i]);
        for (int i = 0; i < f->n_pipes; i++)
            ks_vk_pipeline_destroy(f->ctx, f->pipes[i].pl);
        ks_vk_ctx_destroy(f->ctx);
    }
    free(f->acc);
    free(f->L);
    free(f);
}

/* ---- recording ---- */

/* y = W·x for tokens tok0..tok0+n-1, which the CPU multiplies as one
 * batch of n_batch (= n) rows: its size decides the CPU's path, which the
 * exact kernel follows. */
static ks_status
rec_mat(ks_vk_fw *f, VkCommandBuffer cb, const mat *mt, uint32_t n, uint32_t tok0,
        uint32_t y_stride, bool residual, uint32_t n_batch)
{
    ks_status st;

    if (mt->ek) {
        /* the CPU's path of each token: GEMM for the first n/4*4 of a
         * repacked type, then GEMV; one path otherwise */
        ks_qtype t = mt->w->type;
        int64_t ne1 = (int64_t)mt->w->ne1;
        ks_cpu_path p0 = ks_cpu_matmul_path(t, mt->w->ne0, ne1, n_batch, 0);
        ks_cpu_path p1 = ks_cpu_matmul_path(t, mt->w->ne0, ne1, n_batch, n - 1);
        uint32_t n_first = n;
        if (p0 != p1) {
            n_first = 0;
            while (n_first < n &&
                   ks_cpu_matmul_path(t, mt->w->ne0, ne1, n_batch, n_first) == p0)
                n_first++;
        }
        ks_vk_exact_args a = {
            .rows = (uint32_t)mt->w->ne1,
            .cols = (uint32_t)mt->w->ne0,
            .w_off_bytes = mt->w_off,
            .row_stride_bytes = mt->w->row_bytes,
            .n_tok = n,
            .path = (uint32_t)p0,
            .n_first = n_first == n ? 0 : n_first,
            .path_rest = (uint32_t)p1,
            .x_off_words = tok0 * f->D,
            .x_stride_words = f->D,
            .y_off = tok0 * y_stride,
            .y_stride = y_stride,
            .r_off = residual ? tok0 * y_stride : 0,
            .r_stride = residual ? y_stride : 0,
        };
        if ((st = ks_vk_exact_check(mt->ek, &a, NULL)) != KS_OK)
            return st;
        return ks_vk_exact_record(f->ctx, cb, mt->ek, mt->set, &a);
    }
    ks_vk_matvec_args a = {
        .rows = (uint32_t)mt->w->ne1,
        .cols = (uint32_t)mt->w->ne0,
        .w_off_bytes = mt->w_off,
        .row_stride_bytes = mt->w->row_bytes,
        .x_off = tok0 * f->D,
        .y_off = tok0 * y_stride,
        .b_off = 0,
        .r_off = residual ? tok0 * y_stride : 0,
        .n_tok = n,
        .x_stride = f->D,
        .y_stride = y_stride,
        .r_stride = residual ? y_stride : 0,
        .s_off = tok0 * (f->D / 32u),
        .s_stride = f->D / 32u,
    };
    if ((st = ks_vk_matvec_check(mt->mv, &a, NULL)) != KS_OK)
        return st;
    return ks_vk_matvec_record(f->ctx, cb, mt->mv, mt->set, &a);
}

/* A routed expert weight for the choices s0..s0+n_sl-1 (choice s of
 * token s / K): each reads the expert rids[s] names and activation row
 * x_row0 + (s - s0) / e_div, and writes y row s. The CPU runs each as a
 * one-token product (ks_cpu_matmul_rows_as_one), whatever the batch. */
static ks_status
rec_exp(ks_vk_fw *f, VkCommandBuffer cb, const mat *mt, uint32_t n_sl, uint32_t s0,
        uint32_t x_row0, uint32_t e_div, uint32_t y_stride)
{
    ks_qtype t = mt->w->type;
    ks_status st;
    ks_vk_exact_args a = {
        .rows = (uint32_t)mt->w->ne1,
        .cols = (uint32_t)mt->w->ne0,
        .w_off_bytes = mt->w_off,
        .row_stride_bytes = mt->w->row_bytes,
        .n_tok = n_sl,
        .path = (uint32_t)ks_cpu_matmul_path(t, mt->w->ne0, (int64_t)mt->w->ne1, 1, 0),
        .x_off_words = x_row0 * f->D,
        .x_stride_words = f->D,
        .y_off = s0 * y_stride,
        .y_stride = y_stride,
        .n_expert = (uint32_t)mt->w->ne2,
        .e_stride_bytes = mt->w->row_bytes * mt->w->ne1,
        .e_off = s0,
        .e_div = e_div,
    };

    if ((st = ks_vk_exact_check(mt->ek, &a, NULL)) != KS_OK)
        return st;
    return ks_vk_exact_record(f->ctx, cb, mt->ek, mt->set, &a);
}

/* rec_mat (exact kernels) for a batch of n with the activations from row
 * x_row0 and the outputs from row y_row0 (the shared expert's rows
 * follow the routed ones'). */
static ks_status
rec_mat_at(ks_vk_fw *f, VkCommandBuffer cb, const mat *mt, uint32_t n, uint32_t x_row0,
           uint32_t y_row0, uint32_t y_stride)
{
    ks_qtype t = mt->w->type;
    int64_t ne1 = (int64_t)mt->w->ne1;
    ks_cpu_path p0 = ks_cpu_matmul_path(t, mt->w->ne0, ne1, n, 0);
    ks_cpu_path p1 = ks_cpu_matmul_path(t, mt->w->ne0, ne1, n, n - 1);
    uint32_t n_first = n;
    ks_status st;

    if (p0 != p1) {
        n_first = 0;
        while (n_first < n && ks_cpu_matmul_path(t, mt->w->ne0, ne1, n, n_first) == p0)
            n_first++;
    }
    ks_vk_exact_args a = {
        .rows = (uint32_t)mt->w->ne1,
        .cols = (uint32_t)mt->w->ne0,
        .w_off_bytes = mt->w_off,
        .row_stride_bytes = mt->w->row_bytes,
        .n_tok = n,
        .path = (uint32_t)p0,
        .n_first = n_first == n ? 0 : n_first,
        .path_rest = (uint32_t)p1,
        .x_off_words = x_row0 * f->D,
        .x_stride_words = f->D,
        .y_off = y_row0 * y_stride,
        .y_stride = y_stride,
    };
    if ((st = ks_vk_exact_check(mt->ek, &a, NULL)) != KS_OK)
        return st;
    return ks_vk_exact_record(f->ctx, cb, mt->ek, mt->set, &a);
}

static void
rec_norm(ks_vk_fw *f, VkCommandBuffer cb, ks_vk_pipeline *pl, VkDescriptorSet set, uint32_t tok0,
         uint32_t n)
{
    norm_args a = { f->E, f->E, f->D, f->D / 32u, tok0, f->m->hp.eps };
    ks_vk_cmd_dispatch(cb, pl, set, &a, n, 1, 1);
}

/* ---- profiling ---- */

static ks_status
prof_init(ks_vk_fw *f, cmd *c)
{
    uint32_t cap = 16u * (f->p.l1 - f->p.l0) + 8u;
    VkQueryPoolCreateInfo qi = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
        .queryType = VK_QUERY_TYPE_TIMESTAMP,
        .queryCount = 2u * cap,
    };

    c->marks = calloc(cap, sizeof(*c->marks));
    c->ticks = calloc(2u * cap, sizeof(*c->ticks));
    if (!c->marks || !c->ticks)
        return ks_error(KS_ERR_NOMEM, "vulkan: no memory for the profile");
    c->cap_marks = cap;
    return ks_vk_check(vkCreateQueryPool(f->ctx->device, &qi, NULL, &c->qpool),
                       "vkCreateQueryPool");
}

/* A timestamp before the dispatch of |op| recorded next (no-op when not
 * profiling); mark_end writes the one after it. Dispatches without a
 * barrier between them (q, k, v) may overlap on a GPU; lavapipe runs them
 * one after the other. */
static void
mark_begin(cmd *c, VkCommandBuffer cb, int op, int32_t layer, uint32_t n, uint64_t bytes)
{
    if (!c->qpool || c->n_marks == c->cap_marks)
        return;
    c->marks[c->n_marks] = (ks_vk_fw_prof_rec){ op_names[op], layer, n, bytes, 0 };
    vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, c->qpool, 2u * c->n_marks);
}

static void
mark_end(cmd *c, VkCommandBuffer cb)
{
    if (!c->qpool || c->n_marks == c->cap_marks)
        return;
    vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->qpool,
                        2u * c->n_marks + 1u);
    c->n_marks++;
}

/* Bytes a matrix product moves: the weights once, activations in and out. */
static uint64_t
mat_bytes(const mat *mt, uint32_t n)
{
    return mt->w->row_bytes * mt->w->ne1 + 4u * (uint64_t)n * (mt->w->ne0 + mt->w->ne1);
}

/* Reads the finished run's timestamps into its marks and the totals. */
static void
prof_collect(ks_vk_fw *f, cmd *c)
{
    const ks_hparams *hp = &f->m->hp;
    uint32_t n_l = hp->n_layers + 1u;
    VkResult r;

    if (!c->qpool || c->n_marks == 0)
        return;
    r = vkGetQueryPoolResults(f->ctx->device, c->qpool, 0, 2u * c->n_marks,
                              2u * c->n_marks * sizeof(uint64_t), c->ticks, sizeof(uint64_t),
                              VK_QUERY_RESULT_64_BIT);
    if (r != VK_SUCCESS) {
        ks_log(KS_LOG_WARN, "vulkan", "profile: timestamps not read (%s)", ks_vk_result_str(r));
        return;
    }
    f->prof_last = c;
    for (uint32_t i = 0; i < c->n_marks; i++) {
        ks_vk_fw_prof_rec *m = &c->marks[i];
        uint64_t d = c->ticks[2u * i + 1u] - c->ticks[2u * i];
        int op = 0;
        m->ns = (uint64_t)((double)d * f->tick_ns);
        while (op < N_OPS && strcmp(op_names[op], m->op) != 0)
            op++;
        if (op == OP_ATTN) {
            /* K and V (f16) of every earlier position, per query head */
            uint64_t keys = (uint64_t)m->n_tok * f->pending_pos0 +
                            (uint64_t)m->n_tok * (m->n_tok + 1u) / 2u;
            m->bytes = 8u * (uint64_t)m->n_tok * f->q_dim + keys * 4u * f->q_dim;
        }
        if (f->acc && op < N_OPS) {
            prof_acc *a = &f->acc[((c->n == 1 ? 1u : 0u) * N_OPS + (uint32_t)op) * n_l +
                                  (uint32_t)(m->layer + 1)];
            a->ns += m->ns;
            a->bytes += m->bytes;
            a->n++;
        }
        if (op < N_OPS)
            ks_profile_add(f->p.profile, "vulkan", op_prof[op], m->layer, m->ns, m->bytes);
    }
}

void
ks_vk_fw_profile(const ks_vk_fw *f, const ks_vk_fw_prof_rec **recs, uint32_t *n)
{
    *recs = f->prof_last ? f->prof_last->marks : NULL;
    *n = f->prof_last ? f->prof_last->n_marks : 0;
}

static void
prof_row(const char *what, const prof_acc *a, uint64_t total_ns)
{
    fprintf(stderr, "  %-10s %10.2f %6.1f%% %10.2f %8.2f %8llu\n", what, (double)a->ns / 1e6,
            total_ns ? 100.0 * (double)a->ns / (double)total_ns : 0.0, (double)a->bytes / 1e6,
            a->ns ? (double)a->bytes / (double)a->ns : 0.0, (unsigned long long)a->n);
}

/* The KESTREL_PROFILE table: per op kind, then per layer, per phase. */
static void
prof_print(const ks_vk_fw *f)
{
    static const char *const phase[2] = { "prefill", "decode" };
    uint32_t n_l = f->m->hp.n_layers + 1u;

    for (int ph = 0; ph < 2; ph++) {
        const prof_acc *base = &f->acc[(size_t)ph * N_OPS * n_l];
        prof_acc by_op[N_OPS], total = { 0 };
        char name[32];
        memset(by_op, 0, sizeof by_op);
        for (int op = 0; op < N_OPS; op++)
            for (uint32_t l = 0; l < n_l; l++) {
                const prof_acc *a = &base[(size_t)op * n_l + l];
                by_op[op].ns += a->ns;
                by_op[op].bytes += a->bytes;
                by_op[op].n += a->n;
            }
        for (int op = 0; op < N_OPS; op++) {
            total.ns += by_op[op].ns;
            total.bytes += by_op[op].bytes;
            total.n += by_op[op].n;
        }
        if (total.n == 0)
            continue;
        fprintf(stderr, "vulkan profile (%s, %s): device time from timestamps\n",
                f->info.device, phase[ph]);
        fprintf(stderr, "  %-10s %10s %7s %10s %8s %8s\n", "op", "ms", "share", "MB", "GB/s",
                "count");
        for (int op = 0; op < N_OPS; op++)
            if (by_op[op].n)
                prof_row(op_names[op], &by_op[op], total.ns);
        prof_row("total", &total, total.ns);
        fprintf(stderr, "  %-10s %10s %7s %10s %8s %8s\n", "layer", "ms", "share", "MB",
                "GB/s", "count");
        for (uint32_t l = 0; l < n_l; l++) {
            prof_acc a = { 0 };
            for (int op = 0; op < N_OPS; op++) {
                a.ns += base[(size_t)op * n_l + l].ns;
                a.bytes += base[(size_t)op * n_l + l].bytes;
                a.n += base[(size_t)op * n_l + l].n;
            }
            if (!a.n)
                continue;
            if (l == 0)
                snprintf(name, sizeof name, "head");
            else
                snprintf(name, sizeof name, "%u", l - 1u);
            prof_row(name, &a, total.ns);
        }
    }
}

/* Begins the next submission of recording |c| (growing its list). */
static ks_status
chunk_begin(ks_vk_fw *f, cmd *c, VkCommandBuffer *cb)
{
    ks_vk_cmdbuf *cur;
    ks_status st;

    if (c->n_cbs == c->cap) {
        uint32_t cap = c->cap ? 2u * c->cap : 4u;
        ks_vk_cmdbuf *grown = realloc(c->cbs, cap * sizeof(*grown));
        if (!grown)
            return ks_error(KS_ERR_NOMEM, "vulkan: no memory for command buffers");
        memset(grown + c->cap, 0, (cap - c->cap) * sizeof(*grown));
        c->cbs = grown;
        for (uint32_t i = c->cap; i < cap; i++)
            if ((st = ks_vk_cmdbuf_init(f->ctx, &grown[i])) != KS_OK) {
                c->cap = cap;  /* the rest are zeroed: fini skips them */
                return st;
            }
        c->cap = cap;
    }
    cur = &c->cbs[c->n_cbs];
    if ((st = ks_vk_cmdbuf_begin(f->ctx, cur)) != KS_OK)
        return st;
    cur->work_macs = 0;
    c->n_cbs++;
    *cb = cur->cb;
    return KS_OK;
}

/* Multiply-adds of one layer for a batch of n, about: two per byte of
 * quantized weight per token, and attention over a full context (the
 * recording is replayed at every position). */
static uint64_t
layer_macs(const ks_vk_fw *f, const layer *ly, uint32_t n)
{
    return (uint64_t)n * (2u * ly->w_bytes + 2u * (uint64_t)f->p.n_ctx * f->q_dim);
}

/* Records the range for a batch of n into |c|: whole layers, in as many
 * submissions as keep each under f->submit_macs (a layer alone may be
 * more). Each later submission starts with a barrier, which orders it
 * after the writes of the ones before on the queue. */
/* rec_mat and rec_norm between profile marks. */
static ks_status
rec_mat_m(ks_vk_fw *f, cmd *c, VkCommandBuffer cb, int op, int32_t layer, const mat *mt,
          uint32_t n, uint32_t tok0, uint32_t y_stride, bool residual)
{
    ks_status st;

    mark_begin(c, cb, op, layer, n, mat_bytes(mt, n));
    st = rec_mat(f, cb, mt, n, tok0, y_stride, residual, n);
    mark_end(c, cb);
    return st;
}

static void
rec_norm_m(ks_vk_fw *f, cmd *c, VkCommandBuffer cb, int op, int32_t layer, ks_vk_pipeline *pl,
           VkDescriptorSet set, uint32_t tok0, uint32_t n)
{
    mark_begin(c, cb, op, layer, n, 16u * (uint64_t)n * f->E);
    rec_norm(f, cb, pl, set, tok0, n);
    mark_end(c, cb);
}

/* The MoE FFN of tokens f0..f0+nf-1 (their normed rows in the
 * activation buffers): router → routing → experts' gate and up (and the
 * shared expert's, with its gate) → activations → down → weighted sum
 * into x. Choice rows: token t's j-th expert is row t * K + j; the
 * shared expert's rows follow, at nb * K + t. */
static ks_status
rec_moe(ks_vk_fw *f, cmd *c, VkCommandBuffer cb, int32_t li, const layer *ly, uint32_t f0,
        uint32_t nf)
{
    const moe_layer *me = &ly->moe;
    uint32_t K = f->K, sh0 = f->nb * K, Fe = (uint32_t)me->gate.w->ne1;
    ks_status st;

    if ((st = rec_mat_m(f, c, cb, OP_GATE, li, &me->router, nf, f0, f->X, false)) != KS_OK)
        return st;
    ks_vk_cmd_barrier(cb);
    {
        route_args a = { nf, f->X, K, f->m->hp.moe_norm_w, f->X, K, f0 };
        ks_vk_cmd_dispatch(cb, me->route, me->set_route, &a, (nf + 7u) / 8u, 1, 1);
    }
    ks_vk_cmd_barrier(cb);
    mark_begin(c, cb, OP_GATE, li, nf, 2u * K * nf * me->gate.w->row_bytes * Fe);
    if ((st = rec_exp(f, cb, &me->gate, nf * K, f0 * K, f0, K, f->F)) != KS_OK ||
        (st = rec_exp(f, cb, &me->up, nf * K, f0 * K, f0, K, f->F)) != KS_OK)
        return st;
    if (me->sh_inp.w &&
        ((st = rec_mat_at(f, cb, &me->sh_inp, nf, f0, f0, 1)) != KS_OK ||
         (st = rec_mat_at(f, cb, &me->sh_gate, nf, f0, sh0 + f0, f->F)) != KS_OK ||
         (st = rec_mat_at(f, cb, &me->sh_up, nf, f0, sh0 + f0, f->F)) != KS_OK))
        return st;
    mark_end(c, cb);
    ks_vk_cmd_barrier(cb);
    {
        quant_args a = { Fe, f->F, f->D, f->D / 32u, f0 * K };
        mark_begin(c, cb, OP_GLU, li, nf * K, 12u * (uint64_t)nf * K * Fe);
        ks_vk_cmd_dispatch(cb, ly->glu, ly->set_glu, &a, nf * K, 1, 1);
        if (me->sh_inp.w) {
            quant_args b = { (uint32_t)me->sh_gate.w->ne1, f->F, f->D, f->D / 32u, sh0 + f0 };
            ks_vk_cmd_dispatch(cb, me->glu_sh, me->set_glu_sh, &b, nf, 1, 1);
        }
        mark_end(c, cb);
    }
    ks_vk_cmd_barrier(cb);
    mark_begin(c, cb, OP_DOWN, li, nf * K, K * nf * me->down.w->row_bytes * f->E);
    if ((st = rec_exp(f, cb, &me->down, nf * K, f0 * K, f0 * K, 1, f->E)) != KS_OK)
        return st;
    if (me->sh_inp.w &&
        (st = rec_mat_at(f, cb, &me->sh_down, nf, sh0 + f0, sh0 + f0, f->E)) != KS_OK)
        return st;
    mark_end(c, cb);
    ks_vk_cmd_barrier(cb);
    {
        combine_args a = { f->E, K, f->E, f->E, f0, sh0 };
        ks_vk_cmd_dispatch(cb, me->combine, me->set_combine, &a, nf, 1, 1);
    }
    return KS_OK;
}

static ks_status
record(ks_vk_fw *f, cmd *c, uint32_t n, bool head)
{
    const ks_hparams *hp = &f->m->hp;
    bool gemma = f->m->arch == KS_ARCH_GEMMA3;
    VkCommandBuffer cb;
    uint64_t work = 0;
    ks_status st;

    c->n_cbs = 0;
    if (n >= ATTN_TILED_MIN)
        for (uint32_t il = f->p.l0; il < f->p.l1; il++)
            if (!f->L[il - f->p.l0].attn_f32 &&
                (st = attn_pipe(f, true, &f->L[il - f->p.l0].attn_f32)) != KS_OK)
                return st;
    if ((st = chunk_begin(f, c, &cb)) != KS_OK)
        return st;
    c->n_marks = 0;
    if (f->prof && !c->qpool && (st = prof_init(f, c)) != KS_OK)
        goto fail;
    if (c->qpool)
        vkCmdResetQueryPool(cb, c->qpool, 0, 2u * c->cap_marks);
    ks_vk_cmd_copy(cb, &f->in, 0, &f->x, 0, (uint64_t)n * f->E * 4u);
    ks_vk_cmd_barrier(cb);
    for (uint32_t il = f->p.l0; il < f->p.l1; il++) {
        const layer *ly = &f->L[il - f->p.l0];
        const ks_layer *L = &f->m->layers[il];
        uint64_t lw = layer_macs(f, ly, n);

        if (work > 0 && work + lw > f->submit_macs) {
            c->cbs[c->n_cbs - 1].work_macs = work;
            /* the one before is ended either way: nothing open to end */
            if ((st = ks_vk_cmdbuf_end(f->ctx, &c->cbs[c->n_cbs - 1])) != KS_OK ||
                (st = chunk_begin(f, c, &cb)) != KS_OK)
                return st;
            ks_vk_cmd_barrier(cb);
            work = 0;
        }
        work += lw;

        int32_t li = (int32_t)il;
        rec_norm_m(f, c, cb, OP_NORM_ATTN, li, ly->norm_attn, ly->set_norm_attn, 0, n);
        ks_vk_cmd_barrier(cb);
        if ((st = rec_mat_m(f, c, cb, OP_Q, li, &ly->q, n, 0, f->q_dim, false)) != KS_OK ||
            (st = rec_mat_m(f, c, cb, OP_K, li, &ly->k, n, 0, f->kv_dim, false)) != KS_OK ||
            (st = rec_mat_m(f, c, cb, OP_V, li, &ly->v, n, 0, f->kv_dim, false)) != KS_OK)
            goto fail;
        ks_vk_cmd_barrier(cb);
        if (ly->qk_full) {
            /* in place: each lane rewrites the elements it read */
            norm_args qa = { f->q_dim, f->q_dim, 0, 0, 0, hp->eps };
            norm_args ka = { f->kv_dim, f->kv_dim, 0, 0, 0, hp->eps };
            ks_vk_cmd_dispatch(cb, ly->qk_full, ly->set_qn_full, &qa, n, 1, 1);
            ks_vk_cmd_dispatch(cb, ly->qk_full, ly->set_kn_full, &ka, n, 1, 1);
            ks_vk_cmd_barrier(cb);
        }
        {
            rope_args a = {
                hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot, f->q_dim, f->kv_dim,
                (uint32_t)(L->swa && hp->rope_base_swa != hp->rope_base ? f->cs_local_off : 4u),
                hp->n_rot, f->kv_dim / 2u, hp->eps,
            };
            mark_begin(c, cb, OP_ROPE, li, n,
                       8u * (uint64_t)n * (f->q_dim + 2u * f->kv_dim) + 4u * (uint64_t)n * f->kv_dim);
            ks_vk_cmd_dispatch(cb, ly->rope, ly->set_rope, &a, hp->n_head + hp->n_head_kv, n, 1);
            mark_end(c, cb);
        }
        ks_vk_cmd_barrier(cb);
        {
            /* gemma3 scales the query before rounding it (llama.cpp does) */
            attn_args a = {
                hp->n_head, hp->n_head_kv, hp->head_dim, f->q_dim, f->kv_dim / 2u,
                L->swa ? hp->n_swa : 0u,
                gemma ? 1.0f : hp->attn_scale, gemma ? hp->attn_scale : 1.0f,
            };
            mark_begin(c, cb, OP_ATTN, li, n, 0);  /* bytes: at collection (position) */
            ks_vk_cmd_dispatch(cb, n >= ATTN_TILED_MIN ? ly->attn_f32 : ly->attn, ly->set_attn,
                               &a, hp->n_head, n, 1);
            mark_end(c, cb);
        }
        ks_vk_cmd_barrier(cb);
        {
            quant_args a = { f->q_dim, f->q_dim, f->D, f->D / 32u, 0 };
            mark_begin(c, cb, OP_QUANT, li, n, 8u * (uint64_t)n * f->q_dim);
            ks_vk_cmd_dispatch(cb, ly->quant_att, ly->set_quant_att, &a, n, 1, 1);
            mark_end(c, cb);
        }
        ks_vk_cmd_barrier(cb);
        if ((st = rec_mat_m(f, c, cb, OP_O, li, &ly->o, n, 0, f->E, !gemma)) != KS_OK)
            goto fail;
        ks_vk_cmd_barrier(cb);
        /* the model's last layer runs its FFN for the token whose logits
         * are wanted only, as the CPU does (with one-token kernels) */
        uint32_t f0 = il + 1 == hp->n_layers && head ? n - 1 : 0, nf = n - f0;
        rec_norm_m(f, c, cb, OP_NORM_FFN, li, ly->norm_ffn, ly->set_norm_ffn, f0, nf);
        ks_vk_cmd_barrier(cb);
        if (ly->moe.router.w) {
            if ((st = rec_moe(f, c, cb, li, ly, f0, nf)) != KS_OK)
                goto fail;
            ks_vk_cmd_barrier(cb);
            continue;
        }
        if ((st = rec_mat_m(f, c, cb, OP_GATE, li, &ly->gate, nf, f0, f->F, false)) != KS_OK ||
            (st = rec_mat_m(f, c, cb, OP_UP, li, &ly->up, nf, f0, f->F, false)) != KS_OK)
            goto fail;
        ks_vk_cmd_barrier(cb);
        {
            quant_args a = { f->F, f->F, f->D, f->D / 32u, f0 };
            mark_begin(c, cb, OP_GLU, li, nf, 12u * (uint64_t)nf * f->F);
            ks_vk_cmd_dispatch(cb, ly->glu, ly->set_glu, &a, nf, 1, 1);
            mark_end(c, cb);
        }
        ks_vk_cmd_barrier(cb);
        if ((st = rec_mat_m(f, c, cb, OP_DOWN, li, &ly->down, nf, f0, f->E, !gemma)) != KS_OK)
            goto fail;
        ks_vk_cmd_barrier(cb);
        if (ly->norm_end) {
            rec_norm_m(f, c, cb, OP_NORM_END, li, ly->norm_end, ly->set_norm_end, 0, n);
            ks_vk_cmd_barrier(cb);
        }
    }
    if (head) {
        work += 2u * f->out.w->row_bytes * f->out.w->ne1;
        rec_norm_m(f, c, cb, OP_NORM_HEAD, -1, f->norm_head, f->set_norm_head, n - 1, 1);
        ks_vk_cmd_barrier(cb);
        /* one vector: the logits buffer holds one row (y stride 0) */
        if ((st = rec_mat_m(f, c, cb, OP_HEAD, -1, &f->out, 1, n - 1, 0, false)) != KS_OK)
            goto fail;
    } else {
        ks_vk_cmd_copy(cb, &f->x, 0, &f->x_out, 0, (uint64_t)n * f->E * 4u);
    }
    ks_vk_cmd_host_barrier(cb);
    c->cbs[c->n_cbs - 1].work_macs = work;
    return ks_vk_cmdbuf_end(f->ctx, &c->cbs[c->n_cbs - 1]);
fail:
    ks_vk_cmdbuf_end(f->ctx, &c->cbs[c->n_cbs - 1]);
    return st;
}

/* The recording for (n, head): a kept one, or the least recently used
 * slot recorded anew. */
static ks_status
cmd_for(ks_vk_fw *f, uint32_t n, bool head, cmd **out)
{
    cmd *pick = &f->cmds[0];
    ks_status st;

    f->n_runs++;
    for (int i = 0; i < N_CMD; i++) {
        cmd *c = &f->cmds[i];
        if (c->recorded && c->n == n && c->head == head) {
            c->used = f->n_runs;
            *out = c;
            return KS_OK;
        }
        if (c->used < pick->used)
            pick = c;
    }
    pick->recorded = false;
    if ((st = record(f, pick, n, head)) != KS_OK)
        return st;
    pick->recorded = true;
    pick->n = n;
    pick->head = head;
    pick->used = f->n_runs;
    ks_log(KS_LOG_DEBUG, "vulkan", "recorded layers %u..%u for batches of %u%s in %u "
           "submission(s)", f->p.l0, f->p.l1 - 1, n, head ? " with the head" : "",
           pick->n_cbs);
    *out = pick;
    return KS_OK;
}

ks_status
ks_vk_fw_submit(ks_vk_fw *f, const float *x, uint32_t n, uint32_t pos0, bool want_logits)
{
    const ks_hparams *hp = &f->m->hp;
    bool head = f->p.head && want_logits;
    cmd *c;
    ks_status st;

    if (f->pending)
        return ks_error(KS_ERR_INTERNAL, "vulkan: a run is still in flight");
    if (n == 0 || n > f->nb || (uint64_t)pos0 + n > f->p.n_ctx)
        return ks_error(KS_ERR_INTERNAL, "vulkan: run of %u tokens at %u (batch %u, "
                        "context %u)", n, pos0, f->nb, f->p.n_ctx);
    memcpy(f->in.map, x, (uint64_t)n * f->E * sizeof(float));
    {
        float *par = f->params.map;
        uint32_t p0 = pos0;
        memcpy(&par[0], &p0, 4);
        ks_cpu_rope_table(par + 4, pos0, n, hp->n_rot, hp->rope_base, hp->rope_scale);
        if (hp->rope_base_swa != hp->rope_base)
            ks_cpu_rope_table(par + f->cs_local_off, pos0, n, hp->n_rot, hp->rope_base_swa, 1.0f);
    }
    if ((st = cmd_for(f, n, head, &c)) != KS_OK)
        return st;
    for (uint32_t i = 0; i < c->n_cbs; i++)
        if ((st = ks_vk_cmdbuf_submit(f->ctx, &c->cbs[i])) != KS_OK) {
            /* the ones already queued finish before their buffers are
             * submitted again */
            if (i > 0 && !f->ctx->lost)
                vkQueueWaitIdle(f->ctx->queue);
            return st;
        }
    f->info.n_submits = c->n_cbs;
    f->info.submit_macs = 0;
    for (uint32_t i = 0; i < c->n_cbs; i++)
        if (c->cbs[i].work_macs > f->info.submit_macs)
            f->info.submit_macs = c->cbs[i].work_macs;
    f->pending = c;
    f->pending_pos0 = pos0;
    f->pending_n = n;
    f->pending_head = head;
    return KS_OK;
}

ks_status
ks_vk_fw_finish(ks_vk_fw *f, float *x, float *logits)
{
    const ks_hparams *hp = &f->m->hp;
    cmd *c = f->pending;
    ks_status st;

    if (!c)
        return ks_error(KS_ERR_INTERNAL, "vulkan: nothing in flight");
    f->pending = NULL;
    /* each waits for its own work: the ones before it are done by then */
    for (uint32_t i = 0; i < c->n_cbs; i++)
        if ((st = ks_vk_cmdbuf_wait(f->ctx, &c->cbs[i])) != KS_OK)
            return st;
    prof_collect(f, c);
    if (f->ctx->validation && ks_vk_ctx_validation_count(f->ctx) > 0)
        ks_log(KS_LOG_WARN, "vulkan", "%u validation messages so far",
               ks_vk_ctx_validation_count(f->ctx));
    if (f->pending_head)
        memcpy(logits, f->logits.map, (uint64_t)hp->n_vocab * sizeof(float));
    else if (!f->p.head)
        memcpy(x, f->x_out.map, (uint64_t)f->pending_n * f->E * sizeof(float));
    return KS_OK;
}

ks_status
ks_vk_fw_run(ks_vk_fw *f, float *x, uint32_t n, uint32_t pos0, bool want_logits, float *logits)
{
    ks_status st = ks_vk_fw_submit(f, x, n, pos0, want_logits);

    return st == KS_OK ? ks_vk_fw_finish(f, x, logits) : st;
}

void
ks_vk_fw_info_get(const ks_vk_fw *f, ks_vk_fw_info *out)
{
    *out = f->info;
}

/* ---- the Vulkan device as an execution target ---- */

static ks_status
vk_target_submit(ks_target *t, const float *x, uint32_t n, uint32_t pos0, bool want_logits)
{
    ks_vk_fw *f = t->impl;

    f->submit_ns = ks_now_ns();
    return ks_vk_fw_submit(f, x, n, pos0, want_logits);
}

static ks_status
vk_target_finish(ks_target *t, float *x, float *logits)
{
    ks_vk_fw *f = t->impl;
    ks_status st = ks_vk_fw_finish(f, x, logits);

    f->busy_ns += ks_now_ns() - f->submit_ns;
    return st;
}

static ks_status
vk_target_run(ks_target *t, float *x, uint32_t n, uint32_t pos0, bool want_logits,
              float *logits)
{
    ks_status st = vk_target_submit(t, x, n, pos0, want_logits);

    return st == KS_OK ? vk_target_finish(t, x, logits) : st;
}

static void
vk_target_stats(const ks_target *t, ks_target_stats *out)
{
    const ks_vk_fw *f = t->impl;

    memset(out, 0, sizeof(*out));
    out->n_kernels_cached = f->info.n_shader_hits;
    out->n_kernels_compiled = f->info.n_shader_compiled;
    out->setup_ms = f->info.setup_ms;
    out->weight_bytes = f->info.weight_bytes;
    out->kv_bytes = f->info.kv_bytes;
    out->busy_ns = f->busy_ns;
}

static void
vk_target_destroy(ks_target *t)
{
    ks_vk_fw_destroy(t->impl);
    free(t);
}

static const ks_target_ops vk_ops = { vk_target_run, vk_target_destroy, vk_target_submit,
                                      vk_target_finish, vk_target_stats, NULL };

static const char *
vk_supports(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head)
{
    /* a copy: the caller may format the reason into ks_error's buffer */
    static _Thread_local char why[512];

    (void)l0, (void)l1, (void)head;
    if (env->kv_f32)
        return "the Vulkan kernels keep an f16 KV cache";
    if (ks_vk_fw_supports(env->model) != KS_OK) {
        snprintf(why, sizeof why, "%s", ks_last_error());
        return why;
    }
    return NULL;
}

static const char *
vk_auto_skip(const ks_target_env *env)
{
    return ks_vk_auto_skip_reason(env->device);
}

/* Bytes per layer: its weights, norms and biases, 16-byte aligned as the
 * buffers are, and an f16 KV cache of the context. */
static ks_status
vk_memory(const ks_target_env *env, ks_target_memory *out)
{
    const ks_model *m = env->model;
    const ks_hparams *hp = &m->hp;
    uint64_t kv = 2u * 2u * (uint64_t)env->n_ctx * hp->n_head_kv * hp->head_dim;
    ks_status st;

    if ((st = ks_vk_fw_device(env->device, out->device, sizeof out->device,
                              &out->avail_bytes)) != KS_OK)
        return st;
    for (uint32_t il = 0; il < hp->n_layers; il++) {
        const ks_layer *L = &m->layers[il];
        const ks_weight *w[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down,
                                 &L->bq, &L->bk, &L->bv, &L->attn_norm, &L->ffn_norm,
                                 &L->q_norm, &L->k_norm, &L->post_attn_norm,
                                 &L->post_ffw_norm, &L->gate_inp, &L->gate_exps,
                                 &L->up_exps, &L->down_exps, &L->gate_inp_shexp,
                                 &L->gate_shexp, &L->up_shexp, &L->down_shexp };
        uint64_t b = kv;
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            if (w[i]->data)
                b += (w[i]->row_bytes * (w[i]->ne1 ? w[i]->ne1 : 1) *
                      (w[i]->ne2 ? w[i]->ne2 : 1) + 15u) & ~(uint64_t)15u;
        out->layer_bytes[il] = b;
    }
    out->head_bytes = m->output.row_bytes * m->output.ne1 + 4u * (uint64_t)hp->n_vocab +
                      4u * (uint64_t)hp->n_embd;
    out->fixed_bytes = ks_vk_fw_fixed_bytes(m, env->n_batch);
    return KS_OK;
}

static ks_status
vk_create(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head, ks_target **out)
{
    ks_vk_fw_params p = { .device = env->device, .l0 = l0, .l1 = l1, .head = head,
                          .n_ctx = env->n_ctx, .n_batch = env->n_batch,
                          .profile = env->profile };
    ks_target *t = calloc(1, sizeof(*t));
    ks_status st;

    *out = NULL;
    if (!t)
        return ks_error(KS_ERR_NOMEM, "targets: no memory");
    if ((st = ks_vk_fw_create(env->model, &p, (ks_vk_fw **)&t->impl)) != KS_OK) {
        free(t);
        return st;
    }
    ks_target_init(t, &vk_ops, t->impl, "vulkan", l0, l1, head, true);
    snprintf(t->desc, sizeof t->desc, "vulkan (%.60s) layers %u-%u%s",
             ((ks_vk_fw *)t->impl)->info.device, l0, l1 - 1, head ? " + head" : "");
    *out = t;
    return KS_OK;
}

const ks_target_kind ks_vk_target_kind = { "vulkan", vk_supports, vk_auto_skip, vk_memory,
                                           vk_create };

ks_status
ks_vk_fw_device(int32_t device, char *name, size_t name_size, uint64_t *budget_bytes)
{
    ks_vk_device_info *devs = NULL;
    uint32_t n = 0, pick;
    const char *env = ks_env_str("KESTREL_VK_BUDGET_MB");
    ks_status st;

    if ((st = ks_vk_devices_list(NULL, &n)) != KS_OK)
        return st;
    devs = calloc(n, sizeof(*devs));
    if (!devs)
        return ks_error(KS_ERR_NOMEM, "vulkan: no memory");
    if ((st = ks_vk_devices_list(devs, &n)) != KS_OK ||
        (st = ks_vk_device_choose(devs, n, device, &pick)) != KS_OK) {
        free(devs);
        return st;
    }
    snprintf(name, name_size, "%s", devs[pick].name);
    /* the largest device-local heap's budget (or size) */
    *budget_bytes = 0;
    for (uint32_t h = 0; h < devs[pick].n_heaps; h++) {
        const ks_vk_heap_info *hi = &devs[pick].heaps[h];
        uint64_t b = hi->budget_bytes ? hi->budget_bytes : hi->size_bytes;
        if (hi->device_local && b > *budget_bytes)
            *budget_bytes = b;
    }
    if (env) {
        uint64_t b;
        if ((st = ks_vk_budget_from_env(&b)) != KS_OK) {
            free(devs);
            return st;
        }
        *budget_bytes = b;
    }
    free(devs);
    return KS_OK;
}

uint64_t
ks_vk_fw_fixed_bytes(const ks_model *m, uint32_t n_batch)
{
    const ks_hparams *hp = &m->hp;
    uint64_t E = hp->n_embd, q = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    uint64_t D = E > q ? E : q;

    if (hp->n_expert) {
        /* routing buffers, and g, u, the activations and the expert
         * outputs for K + 1 rows a token */
        uint64_t K = hp->n_expert_used;
        F = hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp;
        F = F > hp->n_ff_shexp ? F : hp->n_ff_shexp;
        D = ((F > D ? F : D) + 255u) & ~(uint64_t)255u;
        return (uint64_t)n_batch * 4u * (6u * E + 2u * q + 2u * kv + 2u * hp->n_expert +
                                         2u * K + 1u + (K + 1u) * (2u * F + 7u * D + E));
    }
    D = ((F > D ? F : D) + 255u) & ~(uint64_t)255u;
    return (uint64_t)n_batch * 4u * (6u * E + 2u * q + 2u * kv + 2u * F + 7u * D);
}
