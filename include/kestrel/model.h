/* Runtimes and models: the objects an application creates first.
 *
 * A ks_runtime holds what is shared by every model: the chosen backend,
 * the thread count. A ks_model is a GGUF file mapped read-only with its
 * architecture, weights and tokenizer; weights are views into the mapping,
 * so loading costs little memory. One model can serve several sessions on
 * several threads at once. */
#ifndef KESTREL_MODEL_H
#define KESTREL_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "kestrel/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ks_runtime ks_runtime;
typedef struct ks_model   ks_model;

typedef enum ks_backend {
    KS_BACKEND_AUTO = 0,  /* the best available target for the model */
    KS_BACKEND_CPU,
    KS_BACKEND_VULKAN,
} ks_backend;

typedef enum ks_policy {
    KS_POLICY_BALANCED = 0,  /* limits; saves power on a low battery */
    KS_POLICY_PERFORMANCE,   /* limits only */
    KS_POLICY_BATTERY,       /* less power whenever on battery */
} ks_policy;

typedef struct ks_runtime_params {
    ks_backend backend;    /* 0: auto */
    int32_t    n_threads;  /* 0: the number of online CPUs */
    int32_t    device;     /* 0: the best Vulkan device; N >= 1: the one
                            * `kestrel devices` lists as [N-1] */
    /* Placement of the layers (backend auto or vulkan): an explicit map
     * such as "cpu:0-9,vulkan:10-29" (NULL: none), or the last gpu_layers
     * layers on the GPU (0: automatic). Without either, vulkan puts every
     * layer that fits the device's memory on it, and auto splits by a cost
     * model calibrated on first use (cached under ~/.cache/kestrel). */
    const char *split;
    int32_t    gpu_layers;
    /* The thermal and power governor paces decoding, lowers the thread
     * count and moves work so the device stays inside its envelope. It is
     * on when a limit is set here or when the device reports a
     * temperature with a passive trip point (then the limit is that trip
     * minus 5 °C); sensors are read relative to $KESTREL_SYSFS_ROOT. */
    float      temp_limit_c;   /* 0: the first passive trip - 5 °C */
    float      power_limit_w;  /* 0: none */
    ks_policy  policy;         /* 0: balanced */
    bool       no_governor;    /* never govern (benchmarks) */
} ks_runtime_params;

/* On failure *out is NULL and ks_last_error() says why. */
KS_API ks_status ks_runtime_create(const ks_runtime_params *p,
                                   ks_runtime **out);
KS_API void      ks_runtime_destroy(ks_runtime *rt);  /* NULL is a no-op */
/* The backend asked for ("auto", "cpu" or "vulkan"; "" for NULL); where a
 * session's layers run is ks_session_backend_name / ks_session_placement. */
KS_API const char *ks_runtime_backend_name(const ks_runtime *rt);

typedef struct ks_model_params {
    uint32_t reserved;  /* 0 */
    /* Load only the tokenizer and the metadata (llama.cpp's vocab_only),
     * e.g. from llama.cpp's vocab-only ggml-vocab-*.gguf files: any
     * general.architecture is taken and no tensor is needed or checked.
     * Tokenizing, detokenizing, describing (arch, name, n_vocab only) and
     * chat formatting work; ks_session_create refuses the model with
     * KS_ERR_INVALID_ARG. */
    bool     vocab_only;
    /* A tokenizer.ggml.pre (BPE pre-tokenizer) that Kestrel does not know
     * is refused with KS_ERR_UNSUPPORTED naming it, as llama.cpp refuses
     * it. With this set, the GPT-2 rules are used instead with a warning;
     * the token ids may then differ from the model's own tokenizer. */
    bool     pre_fallback_gpt2;
    /* Mixtures of experts: the bytes of RAM the weights may take (0: no
     * limit). The weights outside the experts stay mapped and count first;
     * the hot experts that fit the rest are copied into RAM the runtime
     * owns (locked where mlock is allowed) and the cold ones are read from
     * the file each time, with their pages dropped after use. Placement
     * follows the counted uses (ks_model_expert_stats). Below the weights
     * outside the experts: KS_ERR_INVALID_ARG. Ignored, with a warning, by
     * a dense model. */
    uint64_t mem_budget_bytes;
} ks_model_params;

/* Maps and validates |path|. A malformed file gives KS_ERR_CORRUPT with the
 * field or tensor named; an unsupported architecture, tensor type or
 * tokenizer (tokenizer.ggml.model other than llama/gpt2, unknown
 * tokenizer.ggml.pre) gives KS_ERR_UNSUPPORTED. |rt| must outlive the
 * model. p may be NULL (all defaults). */
KS_API ks_status ks_model_load(ks_runtime *rt, const char *path,
                               const ks_model_params *p, ks_model **out);
KS_API void      ks_model_destroy(ks_model *m);  /* NULL is a no-op */

typedef struct ks_model_desc {
    const char *arch;         /* "llama", "qwen2", "qwen3", "gemma3" */
    const char *name;         /* general.name, or the file name */
    uint32_t    n_layers;
    uint32_t    n_embd;
    uint32_t    n_head;
    uint32_t    n_head_kv;
    uint32_t    head_dim;
    uint32_t    n_ff;
    uint32_t    n_vocab;
    uint32_t    n_ctx_train;
    uint64_t    n_params;
    uint64_t    file_bytes;
    double      load_ms;      /* time ks_model_load took */
    uint64_t    active_bytes; /* weight bytes one decode step reads: every
                                 matrix but the embedding table (one row),
                                 and of a mixture of experts only the
                                 experts used per token (expert_used_count
                                 of expert_count) */
} ks_model_desc;

/* Strings stay valid while the model lives. A NULL |m| zeroes *out. */
KS_API void ks_model_describe(const ks_model *m, ks_model_desc *out);

/* Text to token ids, count-then-fill: with out == NULL or cap too small,
 * *n_out is the count needed (KS_OK when out is NULL, KS_ERR_INVALID_ARG
 * when cap is too small). add_special adds BOS/EOS as the model's metadata
 * asks; parse_special turns texts such as "<|im_start|>" into their
 * special tokens. Thread safe. */
KS_API ks_status ks_model_tokenize(const ks_model *m, const char *text,
                                   size_t len, bool add_special,
                                   bool parse_special, int32_t *out,
                                   size_t cap, size_t *n_out);

/* The bytes token |id| stands for when streamed (may be part of a UTF-8
 * character). Returns the byte count, which may exceed cap (then buf holds
 * the first cap bytes); buf NULL asks only for the count, a NULL |m| gives
 * 0. Thread safe. */
KS_API size_t ks_model_token_piece(const ks_model *m, int32_t id, char *buf,
                                   size_t cap);

/* Token ids back to text, count-then-fill as ks_model_tokenize. */
KS_API ks_status ks_model_detokenize(const ks_model *m, const int32_t *ids,
                                     size_t n, char *buf, size_t cap,
                                     size_t *n_out);

/* True for tokens that end generation (eos, end-of-turn, ...); false for
 * a NULL |m|. */
KS_API bool ks_model_token_is_eog(const ks_model *m, int32_t id);

typedef struct ks_chat_message {
    const char *role;     /* "system", "user" or "assistant" */
    const char *content;
} ks_chat_message;

/* Formats a conversation with the model's chat template (a built-in
 * format chosen from the template in the file; no template code from the
 * file is ever run), ending with the assistant's turn prefix when
 * add_generation_prompt. Count-then-fill as ks_model_tokenize. The text
 * holds the markers' texts; tokenizing it whole with parse_special would
 * also turn marker texts inside messages into control tokens: to run a
 * conversation use ks_model_chat_tokenize. */
KS_API ks_status ks_model_chat_format(const ks_model *m,
                                      const ks_chat_message *msgs, size_t n,
                                      bool add_generation_prompt, char *buf,
                                      size_t cap, size_t *n_out);

/* The same conversation as token ids, ready for ks_session_generate:
 * the template's turn markers become their special tokens, while message
 * content (and roles, and the model's default system message) is always
 * tokenized as plain text, so a message that contains "<|im_end|>" cannot
 * end its turn or open another. Starts with BOS when the model's metadata
 * asks for it (tokenizer.ggml.add_bos_token or the tokenizer's default);
 * never ends with EOS. Where the text holds no marker texts outside the
 * markers, the ids equal ks_model_tokenize(ks_model_chat_format(...),
 * add_special, parse_special).
 * Count-then-fill: *n_out always receives the count needed; out == NULL
 * gives KS_OK, cap below the count KS_ERR_INVALID_ARG. Errors as ks_model_chat_format, KS_ERR_NOMEM. Thread
 * safe. */
KS_API ks_status ks_model_chat_tokenize(const ks_model *m,
                                        const ks_chat_message *msgs, size_t n,
                                        bool add_generation_prompt,
                                        int32_t *out, size_t cap,
                                        size_t *n_out);

/* Expert placement under ks_model_params.mem_budget_bytes, since load. */
typedef struct ks_expert_stats {
    bool     placed;          /* a budget is in force on a mixture of experts */
    bool     locked;          /* the resident experts are mlock'ed */
    uint64_t budget_bytes;
    uint64_t expert_bytes;    /* one expert's gate, up and down matrices */
    uint32_t n_slots;         /* experts the budget holds in RAM */
    uint32_t n_resident;      /* experts in RAM now */
    uint32_t n_experts;       /* n_layers * expert_count */
    uint64_t n_tokens;        /* tokens through the first MoE layer */
    uint64_t n_hits;          /* expert uses served from RAM */
    uint64_t n_misses;        /* expert uses read from the mapped file */
    uint64_t cold_bytes;      /* bytes of cold experts touched */
    uint64_t io_read_bytes;   /* /proc/self/io read_bytes since load */
    uint64_t n_predicted;     /* experts read ahead on a prediction */
    uint64_t n_predicted_used;/* of those, the ones the layer then used */
    uint64_t n_used_after_prediction; /* experts used by predicted layers */
    uint32_t n_moves;         /* re-planning moves (evictions) */
    uint32_t n_fills;         /* cold experts copied into free slots */
} ks_expert_stats;

/* Zeroes *out for a NULL |m|, a dense model or no budget. Thread safe. */
KS_API void ks_model_expert_stats(const ks_model *m, ks_expert_stats *out);

/* Layer |layer|'s experts resident in RAM, count-then-fill: returns how
 * many there are and writes the first |cap| ids (increasing) to ids (NULL
 * ok). 0 without a budget. */
KS_API uint32_t ks_model_expert_resident(const ks_model *m, uint32_t layer,
                                         uint32_t *ids, uint32_t cap);

#ifdef __cplusplus
}
#endif
#endif
