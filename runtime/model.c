/* Model loading: map the GGUF file, read the architecture's
 * hyper-parameters from its metadata, bind every weight the architecture
 * needs to a view into the mapping (checking type, shape and CPU support),
 * then build the tokenizer and pick the chat format. Nothing is copied.
 *
 * Facts per architecture: shared/reference/gguf-and-quants.md section 4. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/chat.h"
#include "runtime/experts.h"
#include "runtime/gguf.h"
#include "runtime/model_priv.h"
#include "runtime/tokenizer.h"

static const struct {
    const char *name;
    ks_arch     arch;
} arch_names[] = {
    { "llama", KS_ARCH_LLAMA },
    { "qwen2", KS_ARCH_QWEN2 },
    { "qwen3", KS_ARCH_QWEN3 },
    { "gemma3", KS_ARCH_GEMMA3 },
    { "qwen2moe", KS_ARCH_QWEN2MOE },
    { "qwen3moe", KS_ARCH_QWEN3MOE },
    { "olmoe", KS_ARCH_OLMOE },
};

static bool
is_moe(ks_arch a)
{
    return a == KS_ARCH_QWEN2MOE || a == KS_ARCH_QWEN3MOE || a == KS_ARCH_OLMOE;
}

/* Reads "{arch}.{suffix}" as an unsigned integer. A per-layer array is
 * accepted when all its entries agree. */
static ks_status
arch_u32(const ks_model *m, const char *suffix, bool required, uint32_t def,
         uint32_t *out)
{
    char key[128];
    uint64_t v;
    ks_gguf_arr arr;

    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    if (ks_gguf_get_u64(m->gguf, key, &v)) {
        if (v > UINT32_MAX)
            return ks_error(KS_ERR_CORRUPT,
                            "%s: metadata %s = %llu is out of range", m->name,
                            key, (unsigned long long)v);
        *out = (uint32_t)v;
        return KS_OK;
    }
    if (ks_gguf_get_arr(m->gguf, key, &arr) && arr.n > 0) {
        int64_t first = ks_gguf_arr_i64(&arr, 0);
        for (uint64_t i = 1; i < arr.n; i++)
            if (ks_gguf_arr_i64(&arr, i) != first)
                return ks_error(KS_ERR_UNSUPPORTED,
                                "%s: metadata %s differs between layers "
                                "(%lld at layer 0, %lld at layer %llu); "
                                "Kestrel needs one value for all layers",
                                m->name, key, (long long)first,
                                (long long)ks_gguf_arr_i64(&arr, i),
                                (unsigned long long)i);
        if (first < 0 || first > UINT32_MAX)
            return ks_error(KS_ERR_CORRUPT, "%s: metadata %s is out of range",
                            m->name, key);
        *out = (uint32_t)first;
        return KS_OK;
    }
    if (ks_gguf_find(m->gguf, key))
        return ks_error(KS_ERR_CORRUPT,
                        "%s: metadata %s has the wrong type (expected an "
                        "integer)", m->name, key);
    if (required)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: missing required metadata key '%s'", m->name,
                        key);
    *out = def;
    return KS_OK;
}

static float
arch_f32(const ks_model *m, const char *suffix, float def)
{
    char key[128];
    float v;

    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    return ks_gguf_get_f32(m->gguf, key, &v) ? v : def;
}

/* Kestrel's bound on expert_count (llama.cpp's LLAMA_MAX_EXPERTS is 1024
 * in the peer's sources, src/llama-hparams.h). */
enum { KS_MAX_EXPERTS = 1024 };

/* The experts' metadata, as llama.cpp reads it (src/models/qwen3moe.cpp,
 * olmoe.cpp, qwen2moe.cpp; src/llama-graph.cpp build_moe_ffn): softmax
 * routing over expert_count experts, the expert_used_count largest taken;
 * their weights divided by their sum for qwen3moe only (llama.cpp passes
 * norm_w = true there and false for olmoe and qwen2moe, whatever the
 * file's expert_weights_norm says; expert_weights_scale is not read for
 * these three). A routed expert's FFN length is expert_feed_forward_length,
 * or feed_forward_length / expert_used_count when absent; olmoe's experts
 * use feed_forward_length itself. qwen2moe's shared expert has
 * expert_shared_feed_forward_length, or feed_forward_length. */
static ks_status
read_moe_hparams(ks_model *m)
{
    ks_hparams *hp = &m->hp;
    ks_status st;

    if ((st = arch_u32(m, "expert_count", true, 0, &hp->n_expert)) ||
        (st = arch_u32(m, "expert_used_count", true, 0, &hp->n_expert_used)))
        return st;
    if (hp->n_expert == 0 || hp->n_expert > KS_MAX_EXPERTS)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: metadata %s.expert_count = %u, expected 1..%d", m->name,
                        m->arch_name, hp->n_expert, KS_MAX_EXPERTS);
    if (hp->n_expert_used == 0 || hp->n_expert_used > hp->n_expert)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: metadata %s.expert_used_count = %u, expected 1..%u "
                        "(expert_count)", m->name, m->arch_name, hp->n_expert_used,
                        hp->n_expert);
    hp->n_ff_exp = hp->n_ff;
    if (m->arch != KS_ARCH_OLMOE &&
        (st = arch_u32(m, "expert_feed_forward_length", false,
                       hp->n_ff / hp->n_expert_used, &hp->n_ff_exp)))
        return st;
    if (hp->n_ff_exp == 0)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: metadata %s.expert_feed_forward_length is 0", m->name,
                        m->arch_name);
    if (m->arch == KS_ARCH_QWEN2MOE) {
        if ((st = arch_u32(m, "expert_shared_feed_forward_length", false, hp->n_ff,
                           &hp->n_ff_shexp)))
            return st;
        if (hp->n_ff_shexp == 0)
            return ks_error(KS_ERR_CORRUPT,
                            "%s: metadata %s.expert_shared_feed_forward_length is 0",
                            m->name, m->arch_name);
    }
    hp->moe_norm_w = m->arch == KS_ARCH_QWEN3MOE;
    return KS_OK;
}

static ks_status
read_hparams(ks_model *m)
{
    ks_hparams *hp = &m->hp;
    ks_status st;
    char key[128];
    uint32_t key_len, val_len;

    if ((st = arch_u32(m, "embedding_length", true, 0, &hp->n_embd)) ||
        (st = arch_u32(m, "block_count", true, 0, &hp->n_layers)) ||
        (st = arch_u32(m, "attention.head_count", true, 0, &hp->n_head)) ||
        (st = arch_u32(m, "attention.head_count_kv", false, hp->n_head,
                       &hp->n_head_kv)) ||
        (st = arch_u32(m, "feed_forward_length", true, 0, &hp->n_ff)) ||
        (st = arch_u32(m, "context_length", true, 0, &hp->n_ctx_train)))
        return st;
    if (hp->n_embd == 0 || hp->n_layers == 0 || hp->n_head == 0 ||
        hp->n_head_kv == 0 || hp->n_ff == 0 || hp->n_ctx_train == 0)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: a size in the %s metadata is zero (embedding %u, "
                        "blocks %u, heads %u, kv heads %u, ffn %u, context %u)",
                        m->name, m->arch_name, hp->n_embd, hp->n_layers,
                        hp->n_head, hp->n_head_kv, hp->n_ff, hp->n_ctx_train);
    if (hp->n_head % hp->n_head_kv != 0)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: %u attention heads is not a multiple of %u KV "
                        "heads", m->name, hp->n_head, hp->n_head_kv);
    if (hp->n_layers > 4096 || hp->n_head > 4096 || hp->n_embd > (1u << 20))
        return ks_error(KS_ERR_UNSUPPORTED,
                        "%s: sizes out of Kestrel's range (%u layers, %u "
                        "heads, embedding %u)", m->name, hp->n_layers,
                        hp->n_head, hp->n_embd);
    if ((st = arch_u32(m, "attention.key_length", false,
                       hp->n_embd / hp->n_head, &key_len)) ||
        (st = arch_u32(m, "attention.value_length", false, key_len,
                       &val_len)))
        return st;
    if (key_len != val_len || key_len == 0 || key_len % 2 || key_len > 1024)
        return ks_error(KS_ERR_UNSUPPORTED,
                        "%s: head size key %u / value %u; Kestrel needs "
                        "equal, even sizes up to 1024", m->name, key_len,
                        val_len);
    hp->head_dim = key_len;
    if ((st = arch_u32(m, "rope.dimension_count", false, key_len,
                       &hp->n_rot)))
        return st;
    if (hp->n_rot > key_len || hp->n_rot % 2)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: rope.dimension_count %u must be even and at most "
                        "the head size %u", m->name, hp->n_rot, key_len);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon",
             m->arch_name);
    if (!ks_gguf_get_f32(m->gguf, key, &hp->eps))
        return ks_error(KS_ERR_CORRUPT,
                        "%s: missing required metadata key '%s'", m->name,
                        key);
    hp->rope_base = arch_f32(m, "rope.freq_base", 10000.0f);
    hp->rope_base_swa = hp->rope_base;
    hp->rope_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch_name);
    {
        const char *type = ks_gguf_get_str(m->gguf, key, NULL);
        if (type && strcmp(type, "linear") == 0) {
            float f = arch_f32(m, "rope.scaling.factor", 1.0f);
            hp->rope_scale = f > 0 ? f : 1.0f;
        } else if (type && strcmp(type, "none") != 0) {
            return ks_error(KS_ERR_UNSUPPORTED,
                            "%s: RoPE scaling '%s' is not supported (only "
                            "none and linear)", m->name, type);
        }
    }
    hp->emb_scale = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->act = KS_ACT_SILU;
    hp->rope_neox = m->arch != KS_ARCH_LLAMA;
    if (m->arch == KS_ARCH_GEMMA3) {
        hp->emb_scale = sqrtf((float)hp->n_embd);
        hp->act = KS_ACT_GELU_TANH;
        /* llama.cpp hard-codes the local layers' base; it is not in the
         * file. */
        hp->rope_base_swa = 10000.0f;
        if ((st = arch_u32(m, "attention.sliding_window", false, 0,
                           &hp->n_swa)))
            return st;
    }
    return is_moe(m->arch) ? read_moe_hparams(m) : KS_OK;
}

/* Binds tensor |fmt| (printf with the layer index) to |w|, checking that it
 * has |ne0| x |ne1| (x |ne2| when ne2 > 1: expert weights) elements and a
 * type the CPU can compute with. */
static ks_status
bind3(ks_model *m, ks_weight *w, bool required, uint64_t ne0, uint64_t ne1,
      uint64_t ne2, const char *fmt, int layer)
{
    char name[96];
    const ks_gguf_tensor *t;
    const ks_qtype_info *qi;

    snprintf(name, sizeof name, fmt, layer);
    t = ks_gguf_tensor_find(m->gguf, name);
    memset(w, 0, sizeof(*w));
    if (!t) {
        if (required)
            return ks_error(KS_ERR_CORRUPT,
                            "%s: missing tensor '%s' needed by the %s "
                            "architecture", m->name, name, m->arch_name);
        return KS_OK;
    }
    if (t->n_dims > (ne2 > 1 ? 3u : 2u) || t->ne[0] != ne0 || t->ne[1] != ne1 ||
        t->ne[2] != ne2) {
        if (ne2 > 1)
            return ks_error(KS_ERR_CORRUPT,
                            "%s: tensor '%s' has shape [%llu, %llu, %llu, %llu], "
                            "expected [%llu, %llu, %llu] (expert_count %u)", m->name,
                            name, (unsigned long long)t->ne[0],
                            (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                            (unsigned long long)t->ne[3], (unsigned long long)ne0,
                            (unsigned long long)ne1, (unsigned long long)ne2,
                            m->hp.n_expert);
        return ks_error(KS_ERR_CORRUPT,
                        "%s: tensor '%s' has shape [%llu, %llu, %llu, %llu], "
                        "expected [%llu, %llu]", m->name, name,
                        (unsigned long long)t->ne[0],
                        (unsigned long long)t->ne[1],
                        (unsigned long long)t->ne[2],
                        (unsigned long long)t->ne[3],
                        (unsigned long long)ne0, (unsigned long long)ne1);
    }
    qi = ks_qtype_get(t->type);
    if (!qi || !qi->cpu)
        return ks_error(KS_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has type %s, which Kestrel cannot "
                        "compute with yet", m->name, name,
                        ks_qtype_name(t->type));
    if (ne1 > 1 && qi->block_elems > 1 && ne0 % qi->block_elems)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: tensor '%s' rows of %llu are not a multiple of "
                        "the %s block size %u", m->name, name,
                        (unsigned long long)ne0, qi->name, qi->block_elems);
    w->name = t->name;
    w->type = (ks_qtype)t->type;
    w->data = t->data;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = ks_qtype_row_bytes(w->type, ne0);
    w->ne2 = ne2;
    m->n_params += ne0 * ne1 * ne2;
    return KS_OK;
}

static ks_status
bind(ks_model *m, ks_weight *w, bool required, uint64_t ne0, uint64_t ne1,
     const char *fmt, int layer)
{
    return bind3(m, w, required, ne0, ne1, 1, fmt, layer);
}

/* 1-D weights used as f32 vectors (norms, biases) must be F32. */
static ks_status
bind_vec(ks_model *m, ks_weight *w, bool required, uint64_t n,
         const char *fmt, int layer)
{
    ks_status st = bind(m, w, required, n, 1, fmt, layer);

    if (st == KS_OK && w->data && w->type != KS_QUANT_F32)
        return ks_error(KS_ERR_UNSUPPORTED,
                        "%s: tensor '%s' is %s; Kestrel expects norms and "
                        "biases in F32", m->name, w->name,
                        ks_qtype_name(w->type));
    return st;
}

/* A MoE layer's router and experts (read_moe_hparams for the sizes). The
 * dense FFN is ignored: llama.cpp does not load it for these
 * architectures. */
static ks_status
bind_moe(ks_model *m, ks_layer *l, int il)
{
    const ks_hparams *hp = &m->hp;
    uint64_t E = hp->n_embd, F = hp->n_ff_exp, X = hp->n_expert, S = hp->n_ff_shexp;
    bool sh = m->arch == KS_ARCH_QWEN2MOE;
    ks_status st;

    memset(&l->gate, 0, sizeof l->gate);
    memset(&l->up, 0, sizeof l->up);
    memset(&l->down, 0, sizeof l->down);
    if ((st = bind(m, &l->gate_inp, true, E, X, "blk.%d.ffn_gate_inp.weight", il)) ||
        (st = bind3(m, &l->gate_exps, true, E, F, X, "blk.%d.ffn_gate_exps.weight", il)) ||
        (st = bind3(m, &l->up_exps, true, E, F, X, "blk.%d.ffn_up_exps.weight", il)) ||
        (st = bind3(m, &l->down_exps, true, F, E, X, "blk.%d.ffn_down_exps.weight", il)))
        return st;
    if (sh && ((st = bind_vec(m, &l->gate_inp_shexp, true, E,
                              "blk.%d.ffn_gate_inp_shexp.weight", il)) ||
               (st = bind(m, &l->gate_shexp, true, E, S, "blk.%d.ffn_gate_shexp.weight",
                          il)) ||
               (st = bind(m, &l->up_shexp, true, E, S, "blk.%d.ffn_up_shexp.weight",
                          il)) ||
               (st = bind(m, &l->down_shexp, true, S, E, "blk.%d.ffn_down_shexp.weight",
                          il))))
        return st;
    return KS_OK;
}

static ks_status
bind_weights(ks_model *m)
{
    const ks_hparams *hp = &m->hp;
    uint64_t q_dim = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t kv_dim = (uint64_t)hp->n_head_kv * hp->head_dim;
    bool bias = m->arch == KS_ARCH_QWEN2;
    bool qk_norm = m->arch == KS_ARCH_QWEN3 || m->arch == KS_ARCH_GEMMA3 ||
                   m->arch == KS_ARCH_QWEN3MOE;
    bool moe = is_moe(m->arch);
    /* olmoe normalises the whole Q and K rows, not each head: its
     * attn_q_norm and attn_k_norm are [n_embd] (src/models/olmoe.cpp) */
    bool olmoe = m->arch == KS_ARCH_OLMOE;
    uint64_t qn_len = olmoe ? q_dim : hp->head_dim, kn_len = olmoe ? kv_dim : hp->head_dim;
    bool post = m->arch == KS_ARCH_GEMMA3;
    ks_status st;
    const ks_gguf_tensor *emb = ks_gguf_tensor_find(m->gguf,
                                                    "token_embd.weight");

    if (!emb)
        return ks_error(KS_ERR_CORRUPT, "%s: missing tensor "
                        "'token_embd.weight'", m->name);
    if (emb->ne[0] != hp->n_embd || emb->ne[1] == 0 || emb->ne[1] > INT32_MAX)
        return ks_error(KS_ERR_CORRUPT,
                        "%s: token_embd.weight is [%llu, %llu], expected "
                        "[%u, n_vocab]", m->name,
                        (unsigned long long)emb->ne[0],
                        (unsigned long long)emb->ne[1], hp->n_embd);
    m->hp.n_vocab = (uint32_t)emb->ne[1];
    if ((st = bind(m, &m->tok_embd, true, hp->n_embd, hp->n_vocab,
                   "token_embd.weight", 0)) ||
        (st = bind_vec(m, &m->output_norm, true, hp->n_embd,
                       "output_norm.weight", 0)) ||
        (st = bind(m, &m->output, false, hp->n_embd, hp->n_vocab,
                   "output.weight", 0)))
        return st;
    if (!m->output.data)
        m->output = m->tok_embd;  /* tied */

    m->layers = calloc(hp->n_layers, sizeof(*m->layers));
    if (!m->layers)
        return ks_error(KS_ERR_NOMEM, "%s: no memory for %u layers", m->name,
                        hp->n_layers);
    for (uint32_t i = 0; i < hp->n_layers; i++) {
        ks_layer *l = &m->layers[i];
        int il = (int)i;

        if ((st = bind_vec(m, &l->attn_norm, true, hp->n_embd,
                           "blk.%d.attn_norm.weight", il)) ||
            (st = bind(m, &l->wq, true, hp->n_embd, q_dim,
                       "blk.%d.attn_q.weight", il)) ||
            (st = bind(m, &l->wk, true, hp->n_embd, kv_dim,
                       "blk.%d.attn_k.weight", il)) ||
            (st = bind(m, &l->wv, true, hp->n_embd, kv_dim,
                       "blk.%d.attn_v.weight", il)) ||
            (st = bind(m, &l->wo, true, q_dim, hp->n_embd,
                       "blk.%d.attn_output.weight", il)) ||
            (st = bind_vec(m, &l->bq, bias, q_dim, "blk.%d.attn_q.bias",
                           il)) ||
            (st = bind_vec(m, &l->bk, bias, kv_dim, "blk.%d.attn_k.bias",
                           il)) ||
            (st = bind_vec(m, &l->bv, bias, kv_dim, "blk.%d.attn_v.bias",
                           il)) ||
            (st = bind_vec(m, &l->q_norm, qk_norm || olmoe, qn_len,
                           "blk.%d.attn_q_norm.weight", il)) ||
            (st = bind_vec(m, &l->k_norm, qk_norm || olmoe, kn_len,
                           "blk.%d.attn_k_norm.weight", il)) ||
            (st = bind_vec(m, &l->post_attn_norm, post, hp->n_embd,
                           "blk.%d.post_attention_norm.weight", il)) ||
            (st = bind_vec(m, &l->ffn_norm, true, hp->n_embd,
                           "blk.%d.ffn_norm.weight", il)) ||
            (st = bind(m, &l->gate, !moe, hp->n_embd, hp->n_ff,
                       "blk.%d.ffn_gate.weight", il)) ||
            (st = bind(m, &l->up, !moe, hp->n_embd, hp->n_ff,
                       "blk.%d.ffn_up.weight", il)) ||
            (st = bind(m, &l->down, !moe, hp->n_ff, hp->n_embd,
                       "blk.%d.ffn_down.weight", il)) ||
            (st = bind_vec(m, &l->post_ffw_norm, post, hp->n_embd,
                           "blk.%d.post_ffw_norm.weight", il)))
            return st;
        if (moe && (st = bind_moe(m, l, il)) != KS_OK)
            return st;
        /* gemma3: every sixth layer is global (llama.cpp hard-codes the
         * period 6); the others see a window of n_swa tokens. */
        l->swa = m->arch == KS_ARCH_GEMMA3 && hp->n_swa > 0 && il % 6 != 5;
        l->rope_base = l->swa ? hp->rope_base_swa : hp->rope_base;
    }
    return KS_OK;
}

static const char *
base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

KS_API ks_status
ks_model_load(ks_runtime *rt, const char *path, const ks_model_params *p,
              ks_model **out)
{
    uint64_t t0 = ks_now_ns();
    ks_model *m;
    ks_status st;
    const char *arch, *name, *def_sys;

    bool vocab_only = p && p->vocab_only;
    unsigned tok_flags = (p && p->pre_fallback_gpt2)
                             ? KS_TOK_CREATE_PRE_FALLBACK_GPT2 : 0;

    if (!out)
        return ks_null_arg("ks_model_load", "out");
    *out = NULL;
    if (!rt)
        return ks_null_arg("ks_model_load", "rt");
    if (!path)
        return ks_null_arg("ks_model_load", "path");
    m = calloc(1, sizeof(*m));
    if (!m)
        return ks_error(KS_ERR_NOMEM, "model: no memory to load %s", path);
    m->rt = rt;
    if ((st = ks_gguf_open(path, &m->gguf)) != KS_OK)
        goto fail;
    name = ks_gguf_get_str(m->gguf, "general.name", NULL);
    m->name = strdup(name && *name ? name : base_name(path));
    if (!m->name) {
        st = ks_error(KS_ERR_NOMEM, "model: no memory");
        goto fail;
    }
    arch = ks_gguf_get_str(m->gguf, "general.architecture", NULL);
    if (!arch) {
        st = ks_error(KS_ERR_CORRUPT,
                      "%s: missing required metadata key "
                      "'general.architecture'", path);
        goto fail;
    }
    m->arch_name = NULL;
    for (size_t i = 0; i < sizeof arch_names / sizeof arch_names[0]; i++)
        if (strcmp(arch, arch_names[i].name) == 0) {
            m->arch = arch_names[i].arch;
            m->arch_name = arch_names[i].name;
        }
    if (!m->arch_name && vocab_only)
        m->arch_name = arch;   /* only named, never run */
    if (!m->arch_name) {
        st = ks_error(KS_ERR_UNSUPPORTED,
                      "%s: architecture '%s' is not supported (Kestrel runs "
                      "llama, qwen2, qwen3, gemma3, qwen2moe, qwen3moe and olmoe)", path, arch);
        goto fail;
    }
    m->vocab_only = vocab_only;
    if (!vocab_only && ((st = read_hparams(m)) != KS_OK ||
                        (st = bind_weights(m)) != KS_OK))
        goto fail;
    if ((st = ks_tokenizer_create_ex(m->gguf, tok_flags, &m->tok)) != KS_OK)
        goto fail;
    if (vocab_only)
        m->hp.n_vocab = ks_tokenizer_n_vocab(m->tok);
    if (ks_tokenizer_n_vocab(m->tok) > m->hp.n_vocab) {
        st = ks_error(KS_ERR_CORRUPT,
                      "%s: the tokenizer has %u tokens but token_embd.weight "
                      "only %u rows", path, ks_tokenizer_n_vocab(m->tok),
                      m->hp.n_vocab);
        goto fail;
    }
    m->chat_template = ks_gguf_get_str(m->gguf, "tokenizer.chat_template", NULL);
    m->chat_family = (int)ks_chat_detect(m->chat_template, m->arch_name);
    /* A copy of our own: an extracted default lives in the loading
     * thread's storage until that thread's next call. */
    def_sys = ks_chat_default_system((ks_chat_family)m->chat_family,
                                     m->chat_template);
    if (def_sys && !(m->default_system = strdup(def_sys))) {
        st = ks_error(KS_ERR_NOMEM, "%s: no memory for the default system "
                      "message", path);
        goto fail;
    }
    m->file_bytes = ks_gguf_file_size(m->gguf);
    if (p && p->mem_budget_bytes && !vocab_only) {
        if (m->hp.n_expert) {
            if ((st = ks_xstore_create(m, p->mem_budget_bytes, &m->xstore)) != KS_OK)
                goto fail;
        } else {
            ks_log(KS_LOG_WARN, "model", "%s: mem_budget places the experts of a mixture "
                   "of experts; this dense model ignores it", m->name);
        }
    }
    m->load_ms = (double)(ks_now_ns() - t0) / 1e6;
    ks_log(KS_LOG_INFO, "model",
           "%s: %s, %u layers, embedding %u, %u/%u heads of %u, ffn %u, "
           "vocab %u, loaded in %.1f ms", m->name, m->arch_name,
           m->hp.n_layers, m->hp.n_embd, m->hp.n_head, m->hp.n_head_kv,
           m->hp.head_dim, m->hp.n_ff, m->hp.n_vocab, m->load_ms);
    if (m->hp.n_expert)
        ks_log(KS_LOG_INFO, "model", "%s: %u experts of ffn %u, %u per token%s%s", m->name,
               m->hp.n_expert, m->hp.n_ff_exp, m->hp.n_expert_used,
               m->hp.moe_norm_w ? ", weights normalised" : "",
               m->hp.n_ff_shexp ? ", a shared expert" : "");
    *out = m;
    return KS_OK;
fail:
    ks_model_destroy(m);
    return st;
}

KS_API void
ks_model_destroy(ks_model *m)
{
    if (!m)
        return;
    ks_xstore_destroy(m->xstore);
    ks_tokenizer_destroy(m->tok);
    free(m->default_system);
    free(m->layers);
    free(m->name);
    ks_gguf_destroy(m->gguf);
    free(m);
}

static uint64_t
weight_bytes(const ks_weight *w)
{
    return w->data ? w->row_bytes * w->ne1 : 0;
}

/* ks_model_desc.active_bytes: the bytes a decode step reads; of a 3-D
 * expert weight, n_expert_used of its n_expert matrices. */
static uint64_t
active_bytes(const ks_model *m)
{
    uint64_t n = weight_bytes(&m->output) + weight_bytes(&m->output_norm) +
                 m->tok_embd.row_bytes;

    for (uint32_t i = 0; i < m->hp.n_layers; i++) {
        const ks_layer *l = &m->layers[i];
        const ks_weight *ws[] = {
            &l->attn_norm, &l->wq, &l->wk, &l->wv, &l->bq, &l->bk, &l->bv, &l->q_norm,
            &l->k_norm, &l->wo, &l->post_attn_norm, &l->ffn_norm, &l->gate, &l->up,
            &l->down, &l->post_ffw_norm, &l->gate_inp, &l->gate_inp_shexp,
            &l->gate_shexp, &l->up_shexp, &l->down_shexp,
        };
        const ks_weight *xs[] = { &l->gate_exps, &l->up_exps, &l->down_exps };
        for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
            n += weight_bytes(ws[k]);
        for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++)
            n += weight_bytes(xs[k]) * m->hp.n_expert_used;
    }
    return n;
}

KS_API void
ks_model_describe(const ks_model *m, ks_model_desc *d)
{
    if (!d)
        return;
    memset(d, 0, sizeof(*d));
    if (!m)
        return;
    d->arch = m->arch_name;
    d->name = m->name;
    d->n_layers = m->hp.n_layers;
    d->n_embd = m->hp.n_embd;
    d->n_head = m->hp.n_head;
    d->n_head_kv = m->hp.n_head_kv;
    d->head_dim = m->hp.head_dim;
    d->n_ff = m->hp.n_ff;
    d->n_vocab = m->hp.n_vocab;
    d->n_ctx_train = m->hp.n_ctx_train;
    d->n_params = m->n_params;
    d->file_bytes = m->file_bytes;
    d->load_ms = m->load_ms;
    if (!m->vocab_only)
        d->active_bytes = active_bytes(m);
}

/* ---- chat tokenization ---- */

typedef struct id_out {
    int32_t *ids;   /* NULL: count only */
    size_t   cap;
    size_t   n;     /* ids the conversation needs so far */
} id_out;

static void
emit_id(id_out *o, int32_t id)
{
    if (o->ids && o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* Text between two special tokens, tokenized in one piece with
 * parse_special off, as the whole text would be between them. */
static ks_status
emit_text(const ks_model *m, const char *text, size_t len, id_out *o)
{
    size_t k = 0;
    ks_status st;

    if (len == 0)
        return KS_OK;
    st = ks_tokenizer_encode(m->tok, text, len, false, false, NULL, 0, &k);
    if (st != KS_OK)
        return st;
    if (o->ids && o->n <= o->cap && k <= o->cap - o->n) {
        st = ks_tokenizer_encode(m->tok, text, len, false, false,
                                 o->ids + o->n, k, &k);
        if (st != KS_OK)
            return st;
    }
    o->n += k;
    return KS_OK;
}

/* The special token a turn marker stands for, or -1 when this vocabulary
 * has none (then the marker is ordinary text, as in the whole text). */
static int32_t
marker_id(const ks_model *m, const ks_chat_seg *seg)
{
    int32_t id = -1;
    size_t k = 0;

    if (ks_tokenizer_encode(m->tok, seg->text, seg->len, false, true, &id, 1,
                            &k) != KS_OK || k != 1)
        return -1;
    return id;
}

ks_status
ks_chat_check_args(const char *fn, const ks_model *m, const ks_chat_message *msgs,
                   size_t n, size_t *n_out)
{
    if (!n_out)
        return ks_null_arg(fn, "n_out");
    *n_out = 0;
    if (!m)
        return ks_null_arg(fn, "m");
    if (!msgs && n)
        return ks_null_arg(fn, "msgs");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return ks_error(KS_ERR_INVALID_ARG, "%s: argument 'msgs[%zu].%s' is NULL", fn, i,
                            msgs[i].role ? "content" : "role");
    return KS_OK;
}

KS_API ks_status
ks_model_chat_tokenize(const ks_model *m, const ks_chat_message *msgs,
                       size_t n, bool add_generation_prompt, int32_t *out,
                       size_t cap, size_t *n_out)
{
    ks_chat_seg *segs = NULL;
    size_t n_segs = 0, n_text = 0, run = 0;
    char *text = NULL;
    id_out o = { out, out ? cap : 0, 0 };
    ks_status st = ks_chat_check_args("ks_model_chat_tokenize", m, msgs, n, n_out);
    ks_chat_family f;

    if (st != KS_OK)
        return st;
    f = (ks_chat_family)m->chat_family;
    /* ks_chat_message and ks_chat_msg have the same layout by design. */
    st = ks_chat_format_segments(f, (const ks_chat_msg *)msgs, n,
                                 add_generation_prompt, m->default_system,
                                 NULL, 0, &n_segs);
    if (st != KS_OK)
        return st;
    segs = malloc((n_segs ? n_segs : 1) * sizeof(*segs));
    if (!segs)
        return ks_error(KS_ERR_NOMEM, "chat: no memory for %zu segments",
                        n_segs);
    st = ks_chat_format_segments(f, (const ks_chat_msg *)msgs, n,
                                 add_generation_prompt, m->default_system,
                                 segs, n_segs, &n_segs);
    if (st != KS_OK)
        goto out;
    for (size_t i = 0; i < n_segs; i++)
        n_text += segs[i].len;
    text = malloc(n_text ? n_text : 1);
    if (!text) {
        st = ks_error(KS_ERR_NOMEM, "chat: no memory for %zu bytes of "
                      "conversation", n_text);
        goto out;
    }
    if (ks_tokenizer_add_bos(m->tok) && ks_tokenizer_bos(m->tok) >= 0)
        emit_id(&o, ks_tokenizer_bos(m->tok));
    for (size_t i = 0; i < n_segs; i++) {
        int32_t id = segs[i].marker ? marker_id(m, &segs[i]) : -1;

        if (id < 0) {
            memcpy(text + run, segs[i].text, segs[i].len);
            run += segs[i].len;
            continue;
        }
        if ((st = emit_text(m, text, run, &o)) != KS_OK)
            goto out;
        run = 0;
        emit_id(&o, id);
    }
    if ((st = emit_text(m, text, run, &o)) != KS_OK)
        goto out;
    *n_out = o.n;
    if (out && o.n > cap)
        st = ks_error(KS_ERR_INVALID_ARG, "chat: output holds %zu tokens, "
                      "the conversation needs %zu", cap, o.n);
out:
    free(text);
    free(segs);
    return st;
}

KS_API void
ks_model_expert_stats(const ks_model *m, ks_expert_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (m && m->xstore)
        ks_xstore_stats(m->xstore, out);
}

KS_API uint32_t
ks_model_expert_resident(const ks_model *m, uint32_t layer, uint32_t *ids, uint32_t cap)
{
    return m && m->xstore ? ks_xstore_resident(m->xstore, layer, ids, cap) : 0;
}
