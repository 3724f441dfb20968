/* The loaded model as the runtime sees it: hyper-parameters, weight views
 * into the mapped GGUF file, the tokenizer and the chat format. Shared by
 * model.c (building it), forward.c (running it) and session.c (the API). */
#ifndef KS_MODEL_PRIV_H
#define KS_MODEL_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "kestrel/model.h"
#include "runtime/qtype.h"

struct ks_gguf;
struct ks_tokenizer;

typedef enum ks_arch {
    KS_ARCH_LLAMA = 0,
    KS_ARCH_QWEN2,
    KS_ARCH_QWEN3,
    KS_ARCH_GEMMA3,
    KS_ARCH_QWEN2MOE,   /* mixture of experts: routed experts + a shared one */
    KS_ARCH_QWEN3MOE,
    KS_ARCH_OLMOE,
} ks_arch;

/* A 1-D or 2-D weight: ne1 rows of ne0 elements, |row_bytes| apart; or a
 * 3-D expert weight: ne2 such matrices, expert e's rows starting at
 * data + e * ne1 * row_bytes. data == NULL means the tensor is absent
 * (optional tensors only). */
typedef struct ks_weight {
    const char *name;
    ks_qtype    type;
    const void *data;
    uint64_t    ne0;
    uint64_t    ne1;
    uint64_t    row_bytes;
    uint64_t    ne2;        /* experts of a 3-D weight; 1 otherwise */
} ks_weight;

typedef struct ks_layer {
    ks_weight attn_norm;        /* [n_embd], f32 */
    ks_weight wq, wk, wv;       /* [n_embd] x [n_head*hd], [n_embd] x [kv_dim] */
    ks_weight bq, bk, bv;       /* qwen2 biases, f32, else absent */
    ks_weight q_norm, k_norm;   /* [head_dim], qwen3 and gemma3 */
    ks_weight wo;               /* [n_head*hd] x [n_embd] */
    ks_weight post_attn_norm;   /* gemma3 */
    ks_weight ffn_norm;
    ks_weight gate, up;         /* [n_embd] x [n_ff] */
    ks_weight down;             /* [n_ff] x [n_embd] */
    ks_weight post_ffw_norm;    /* gemma3 */
    /* Mixture of experts (gate, up, down absent): */
    ks_weight gate_inp;         /* router [n_embd] x [n_expert] */
    ks_weight gate_exps, up_exps; /* [n_embd] x [n_ff_exp] x [n_expert] */
    ks_weight down_exps;        /* [n_ff_exp] x [n_embd] x [n_expert] */
    ks_weight gate_inp_shexp;   /* qwen2moe: shared expert's gate [n_embd], f32 */
    ks_weight gate_shexp, up_shexp; /* qwen2moe: [n_embd] x [n_ff_shexp] */
    ks_weight down_shexp;       /* qwen2moe: [n_ff_shexp] x [n_embd] */
    bool      swa;              /* sliding-window (local) attention */
    float     rope_base;
} ks_layer;

typedef enum ks_act {
    KS_ACT_SILU = 0,
    KS_ACT_GELU_TANH,
} ks_act;

typedef struct ks_hparams {
    uint32_t n_embd;
    uint32_t n_layers;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;      /* key and value length */
    uint32_t n_ff;
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    uint32_t n_rot;         /* rotated dimensions per head */
    uint32_t n_swa;         /* sliding window; 0: none */
    float    eps;
    float    rope_base;
    float    rope_base_swa;
    float    rope_scale;    /* linear scaling factor; 1: none */
    float    emb_scale;     /* 1, or sqrt(n_embd) for gemma3 */
    float    attn_scale;    /* 1/sqrt(head_dim) */
    bool     rope_neox;     /* rotate (i, i+n_rot/2) instead of (2i, 2i+1) */
    uint32_t n_expert;      /* 0: a dense model */
    uint32_t n_expert_used; /* experts per token, 1..n_expert */
    uint32_t n_ff_exp;      /* a routed expert's FFN length */
    uint32_t n_ff_shexp;    /* the shared expert's (qwen2moe), else 0 */
    bool     moe_norm_w;    /* divide the top-k weights by their sum */
    ks_act   act;
} ks_hparams;

struct ks_runtime {
    ks_backend backend;
    int32_t    n_threads;
    int32_t    device;      /* Vulkan device index, -1: the best */
    char      *split;       /* explicit placement, or NULL */
    int32_t    gpu_layers;  /* 0: not asked */
    float      temp_limit_c;
    float      power_limit_w;
    ks_policy  policy;
    bool       no_governor;
};

struct ks_model {
    ks_runtime          *rt;
    struct ks_gguf      *gguf;
    struct ks_tokenizer *tok;
    ks_arch              arch;
    const char          *arch_name;
    char                *name;
    ks_hparams           hp;
    ks_weight            tok_embd;     /* [n_embd] x [n_vocab] */
    ks_weight            output_norm;
    ks_weight            output;       /* token_embd when tied */
    ks_layer            *layers;       /* [n_layers] */
    int                  chat_family;  /* ks_chat_family */
    const char          *chat_template;
    char                *default_system; /* owned copy, or NULL */
    uint64_t             n_params;
    uint64_t             file_bytes;
    double               load_ms;
    bool                 vocab_only;   /* tokenizer and metadata only: no
                                        * hp but n_vocab, no weights */
    struct ks_xstore    *xstore;       /* expert placement under
                                        * mem_budget_bytes, or NULL */
};

/* The NULL-argument checks (status.h's rule) of the chat functions named
 * |fn|: n_out, m, msgs (unless n is 0) and each message's role and
 * content. Clears *n_out. */
ks_status ks_chat_check_args(const char *fn, const ks_model *m, const ks_chat_message *msgs,
                             size_t n, size_t *n_out);

#endif
