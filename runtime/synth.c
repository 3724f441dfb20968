/* Synthetic model writer. Weights are uniform random in ±1/sqrt(fan_in)
 * (norms near 1), so activations stay in a sane range through many
 * layers; each matrix is generated one row at a time and quantized
 * straight into the output buffer. */
#include "runtime/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/quant.h"
#include "runtime/gguf.h"

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t
next_u64(rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float
uniform(rng *r)  /* [-1, 1) */
{
    return (float)((next_u64(r) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

ks_qtype
ks_synth_fallback_type(ks_qtype want, uint64_t ne0)
{
    const ks_qtype_info *qi = ks_qtype_get(want);

    if (qi->block_elems <= 1 || ne0 % qi->block_elems == 0)
        return want;
    switch (want) {
    case KS_QUANT_Q4_K: want = KS_QUANT_Q5_0; break;
    case KS_QUANT_Q5_K: want = KS_QUANT_Q5_1; break;
    case KS_QUANT_Q6_K: want = KS_QUANT_Q8_0; break;
    case KS_QUANT_Q2_K:
    case KS_QUANT_Q3_K: want = KS_QUANT_Q4_0; break;
    default: return KS_QUANT_F16;
    }
    return ne0 % 32 == 0 ? want : KS_QUANT_F16;
}

typedef struct synth {
    ks_gguf_writer *w;
    rng             r;
    void          **bufs;  /* tensor data kept until the file is written */
    size_t          n_bufs;
    size_t          cap_bufs;
} synth;

static ks_status
keep(synth *s, void *p)
{
    if (s->n_bufs == s->cap_bufs) {
        size_t cap = s->cap_bufs * 2 + 64;
        void **nb = realloc(s->bufs, cap * sizeof(*nb));
        if (!nb)
            return ks_error(KS_ERR_NOMEM, "synth: no memory");
        s->bufs = nb;
        s->cap_bufs = cap;
    }
    s->bufs[s->n_bufs++] = p;
    return KS_OK;
}

/* A [ne0] x [ne1] (x [ne2] when ne2 > 1) tensor of |type| with values
 * center + amp * U(-1,1); |hot_rows| > 0: the first hot_rows rows get
 * center + hot_center instead (a skewed router). */
static ks_status
add3(synth *s, const char *name, ks_qtype type, uint64_t ne0, uint64_t ne1, uint64_t ne2,
     float center, float amp, uint64_t hot_rows, float hot_center)
{
    uint64_t row_bytes, ne[3] = { ne0, ne1, ne2 };
    uint8_t *data;
    float *row;
    ks_status st;

    type = ks_synth_fallback_type(type, ne0);
    row_bytes = ks_qtype_row_bytes(type, ne0);
    data = malloc(row_bytes * ne1 * ne2);
    row = malloc(ne0 * sizeof(float));
    if (!data || !row) {
        free(data);
        free(row);
        return ks_error(KS_ERR_NOMEM, "synth: no memory for %s", name);
    }
    for (uint64_t r = 0; r < ne1 * ne2; r++) {
        float c = r < hot_rows ? center + hot_center : center;
        for (uint64_t i = 0; i < ne0; i++)
            row[i] = c + amp * uniform(&s->r);
        ks_cpu_quantize_row(type, row, data + r * row_bytes, ne0);
    }
    free(row);
    if ((st = keep(s, data)) != KS_OK) {
        free(data);
        return st;
    }
    return ks_gguf_writer_add_tensor(s->w, name, type, ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1, ne,
                                     data, row_bytes * ne1 * ne2);
}

static ks_status
add(synth *s, const char *name, ks_qtype type, uint64_t ne0, uint64_t ne1,
    float center, float amp)
{
    return add3(s, name, type, ne0, ne1, 1, center, amp, 0, 0);
}

static ks_status set_arch_u32(synth *s, const char *arch, const char *suffix, uint32_t v);

/* The MoE metadata and the experts of layer |l| (the router, the routed
 * experts, qwen2moe's shared expert), as llama.cpp reads them
 * (src/models/qwen3moe.cpp, olmoe.cpp, qwen2moe.cpp). */
static ks_status
moe_meta(synth *s, const ks_synth_params *p)
{
    const char *a = p->arch;
    ks_status st;

    if ((st = set_arch_u32(s, a, "expert_count", p->n_expert)) ||
        (st = set_arch_u32(s, a, "expert_used_count", p->n_expert_used)))
        return st;
    if (strcmp(a, "olmoe") != 0 &&
        (st = set_arch_u32(s, a, "expert_feed_forward_length",
                           p->n_ff_exp ? p->n_ff_exp : p->n_ff)))
        return st;
    if (strcmp(a, "qwen2moe") == 0 &&
        (st = set_arch_u32(s, a, "expert_shared_feed_forward_length",
                           p->n_ff_shexp ? p->n_ff_shexp : p->n_ff)))
        return st;
    return KS_OK;
}

static ks_status
moe_layer(synth *s, const ks_synth_params *p, uint32_t l)
{
    bool olmoe = strcmp(p->arch, "olmoe") == 0, sh = strcmp(p->arch, "qwen2moe") == 0;
    uint64_t E = p->n_embd, X = p->n_expert;
    uint64_t F = olmoe || !p->n_ff_exp ? p->n_ff : p->n_ff_exp;
    uint64_t S = p->n_ff_shexp ? p->n_ff_shexp : p->n_ff;
    uint64_t hot = p->router_skew > 0 ? (X / 8 ? X / 8 : 1) : 0;
    float amp_e = 1.0f / sqrtf((float)E);
    char name[64];
    ks_status st;

#define NAME(suffix) (snprintf(name, sizeof name, "blk.%u." suffix, l), name)
    /* the router stays F32, as llama-quantize leaves it */
    if ((st = add3(s, NAME("ffn_gate_inp.weight"), KS_QUANT_F32, E, X, 1, 0, amp_e, hot,
                   p->router_skew * amp_e)) ||
        (st = add3(s, NAME("ffn_gate_exps.weight"), p->wtype, E, F, X, 0, amp_e, 0, 0)) ||
        (st = add3(s, NAME("ffn_up_exps.weight"), p->wtype, E, F, X, 0, amp_e, 0, 0)) ||
        (st = add3(s, NAME("ffn_down_exps.weight"), p->wtype, F, E, X, 0,
                   1.0f / sqrtf((float)F), 0, 0)))
        return st;
    if (sh && ((st = add(s, NAME("ffn_gate_inp_shexp.weight"), KS_QUANT_F32, E, 1, 0,
                         amp_e)) ||
               (st = add(s, NAME("ffn_gate_shexp.weight"), p->wtype, E, S, 0, amp_e)) ||
               (st = add(s, NAME("ffn_up_shexp.weight"), p->wtype, E, S, 0, amp_e)) ||
               (st = add(s, NAME("ffn_down_shexp.weight"), p->wtype, S, E, 0,
                         1.0f / sqrtf((float)S)))))
        return st;
#undef NAME
    return KS_OK;
}

/* A SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then
 * "▁" and letter strings of growing length with falling scores. */
static ks_status
add_vocab(synth *s, uint32_t n_vocab)
{
    char **toks = calloc(n_vocab, sizeof(*toks));
    float *scores = calloc(n_vocab, sizeof(*scores));
    int32_t *types = calloc(n_vocab, sizeof(*types));
    ks_status st = KS_OK;
    uint32_t i = 0;

    if (!toks || !scores || !types) {
        st = ks_error(KS_ERR_NOMEM, "synth: no memory for the vocabulary");
        goto out;
    }
    toks[i] = strdup("<unk>"); types[i++] = 2;
    toks[i] = strdup("<s>"); types[i++] = 3;
    toks[i] = strdup("</s>"); types[i++] = 3;
    for (int b = 0; b < 256; b++) {
        char t[8];
        snprintf(t, sizeof t, "<0x%02X>", b);
        toks[i] = strdup(t);
        types[i++] = 6;
    }
    for (uint64_t k = 0; i < n_vocab; k++) {
        /* k → a word over "etaoinsrhl", with or without the ▁ prefix */
        char t[32], *p = t;
        uint64_t v = k / 2;
        if (k % 2 == 0) {
            memcpy(p, "\xe2\x96\x81", 3);
            p += 3;
        }
        do {
            *p++ = "etaoinsrhl"[v % 10];
            v /= 10;
        } while (v);
        *p = '\0';
        toks[i] = strdup(t);
        scores[i] = -(float)k;
        types[i++] = 1;
    }
    for (uint32_t k = 0; k < n_vocab; k++)
        if (!toks[k]) {
            st = ks_error(KS_ERR_NOMEM, "synth: no memory");
            goto out;
        }
    if ((st = ks_gguf_writer_set_str(s->w, "tokenizer.ggml.model", "llama")) ||
        (st = ks_gguf_writer_set_arr_str(s->w, "tokenizer.ggml.tokens",
                                         (const char *const *)toks, NULL,
                                         n_vocab)) ||
        (st = ks_gguf_writer_set_arr(s->w, "tokenizer.ggml.scores",
                                     KS_GGUF_F32, scores, n_vocab)) ||
        (st = ks_gguf_writer_set_arr(s->w, "tokenizer.ggml.token_type",
                                     KS_GGUF_I32, types, n_vocab)) ||
        (st = ks_gguf_writer_set_u32(s->w, "tokenizer.ggml.bos_token_id", 1)) ||
        (st = ks_gguf_writer_set_u32(s->w, "tokenizer.ggml.eos_token_id", 2)) ||
        (st = ks_gguf_writer_set_u32(s->w, "tokenizer.ggml.unknown_token_id",
                                     0)))
        goto out;
out:
    if (toks)
        for (uint32_t k = 0; k < n_vocab; k++)
            free(toks[k]);
    free(toks);
    free(scores);
    free(types);
    return st;
}

static ks_status
set_arch_u32(synth *s, const char *arch, const char *suffix, uint32_t v)
{
    char key[128];

    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return ks_gguf_writer_set_u32(s->w, key, v);
}

ks_status
ks_synth_write(const ks_synth_params *p, const char *path)
{
    synth s = { 0 };
    ks_status st;
    const char *a = p->arch;
    bool gemma = strcmp(a, "gemma3") == 0, qwen2 = strcmp(a, "qwen2") == 0;
    bool olmoe = strcmp(a, "olmoe") == 0, qwen2moe = strcmp(a, "qwen2moe") == 0;
    bool moe = olmoe || qwen2moe || strcmp(a, "qwen3moe") == 0;
    bool qk_norm = gemma || strcmp(a, "qwen3") == 0 || strcmp(a, "qwen3moe") == 0;
    uint32_t n_kv = p->n_head_kv ? p->n_head_kv : p->n_head;
    uint32_t hd = p->head_dim ? p->head_dim : p->n_embd / p->n_head;
    uint64_t q_dim = (uint64_t)p->n_head * hd, kv_dim = (uint64_t)n_kv * hd;
    float amp_e = 1.0f / sqrtf((float)p->n_embd);
    char name[64], key[128];

    if (p->n_vocab < 300 || !p->n_layers || !p->n_head || !p->n_embd ||
        !p->n_ff || !hd || !ks_cpu_can_quantize(p->wtype))
        return ks_error(KS_ERR_INVALID_ARG,
                        "synth: bad parameters (vocab %u >= 300, layers, "
                        "heads, sizes > 0, a quantizable type)", p->n_vocab);
    if (moe && (!p->n_expert || !p->n_expert_used || p->n_expert_used > p->n_expert))
        return ks_error(KS_ERR_INVALID_ARG,
                        "synth: %s needs 1 <= n_expert_used (%u) <= n_expert (%u)", a,
                        p->n_expert_used, p->n_expert);
    s.r.s = p->seed ? p->seed : 42;
    if ((st = ks_gguf_writer_create(&s.w)) != KS_OK)
        return st;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    if ((st = ks_gguf_writer_set_str(s.w, "general.architecture", a)) ||
        (st = ks_gguf_writer_set_str(s.w, "general.name", "synthetic")) ||
        (st = set_arch_u32(&s, a, "context_length",
                           p->n_ctx ? p->n_ctx : 2048)) ||
        (st = set_arch_u32(&s, a, "embedding_length", p->n_embd)) ||
        (st = set_arch_u32(&s, a, "block_count", p->n_layers)) ||
        (st = set_arch_u32(&s, a, "feed_forward_length", p->n_ff)) ||
        (st = set_arch_u32(&s, a, "attention.head_count", p->n_head)) ||
        (st = set_arch_u32(&s, a, "attention.head_count_kv", n_kv)) ||
        (st = set_arch_u32(&s, a, "attention.key_length", hd)) ||
        (st = set_arch_u32(&s, a, "attention.value_length", hd)) ||
        (st = ks_gguf_writer_set_f32(s.w, key, 1e-6f)) ||
        (gemma && (st = set_arch_u32(&s, a, "attention.sliding_window", 8))) ||
        (moe && (st = moe_meta(&s, p))) ||
        (st = add_vocab(&s, p->n_vocab)))
        goto out;

    /* Small embeddings keep the tied output's logits a few units apart,
     * so sampling tests see a real distribution. */
    if ((st = add(&s, "token_embd.weight", p->wtype, p->n_embd, p->n_vocab,
                  p->router_skew > 0 ? 0.1f : 0, 0.25f)) ||
        (st = add(&s, "output_norm.weight", KS_QUANT_F32, p->n_embd, 1, 1.0f,
                  0.1f)))
        goto out;
    /* llama.cpp requires an output matrix of olmoe and qwen2moe */
    if ((olmoe || qwen2moe || moe) &&
        (st = add(&s, "output.weight", p->wtype, p->n_embd, p->n_vocab, 0, 0.25f)))
        goto out;
    for (uint32_t l = 0; l < p->n_layers; l++) {
        struct {
            const char *n;
            uint64_t ne0, ne1;
            bool on;
            float c, amp;
        } t[] = {
            { "attn_norm.weight", p->n_embd, 1, true, 1, 0.1f },
            { "attn_q.weight", p->n_embd, q_dim, true, 0, amp_e },
            { "attn_k.weight", p->n_embd, kv_dim, true, 0, amp_e },
            { "attn_v.weight", p->n_embd, kv_dim, true, 0, amp_e },
            { "attn_q.bias", q_dim, 1, qwen2 || qwen2moe, 0, 0.1f },
            { "attn_k.bias", kv_dim, 1, qwen2 || qwen2moe, 0, 0.1f },
            { "attn_v.bias", kv_dim, 1, qwen2 || qwen2moe, 0, 0.1f },
            { "attn_q_norm.weight", hd, 1, qk_norm, 1, 0.1f },
            { "attn_k_norm.weight", hd, 1, qk_norm, 1, 0.1f },
            /* olmoe normalises the whole Q and K rows */
            { "attn_q_norm.weight", q_dim, 1, olmoe, 1, 0.1f },
            { "attn_k_norm.weight", kv_dim, 1, olmoe, 1, 0.1f },
            { "attn_output.weight", q_dim, p->n_embd, true, 0,
              1.0f / sqrtf((float)q_dim) },
            { "post_attention_norm.weight", p->n_embd, 1, gemma, 1, 0.1f },
            { "ffn_norm.weight", p->n_embd, 1, true, 1, 0.1f },
            { "ffn_gate.weight", p->n_embd, p->n_ff, !moe, 0, amp_e },
            { "ffn_up.weight", p->n_embd, p->n_ff, !moe, 0, amp_e },
            { "ffn_down.weight", p->n_ff, p->n_embd, !moe, 0,
              1.0f / sqrtf((float)p->n_ff) },
            { "post_ffw_norm.weight", p->n_embd, 1, gemma, 1, 0.1f },
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            if (!t[i].on)
                continue;
            snprintf(name, sizeof name, "blk.%u.%s", l, t[i].n);
            if ((st = add(&s, name, t[i].ne1 > 1 ? p->wtype : KS_QUANT_F32,
                          t[i].ne0, t[i].ne1, t[i].c, t[i].amp)))
                goto out;
        }
        if (moe && (st = moe_layer(&s, p, l)))
            goto out;
    }
    st = ks_gguf_writer_write_file(s.w, path);
out:
    ks_gguf_writer_destroy(s.w);
    for (size_t i = 0; i < s.n_bufs; i++)
        free(s.bufs[i]);
    free(s.bufs);
    return st;
}
