/* Tokenizer built from GGUF metadata: SentencePiece BPE (`llama`) and
 * byte-level BPE (`gpt2`), reproducing llama.cpp's llm_tokenizer_spm and
 * llm_tokenizer_bpe token for token. Reference:
 * shared/reference/gguf-and-quants.md section 5. Internal; not installed.
 *
 * A ks_tokenizer copies everything it needs (token texts, scores, types,
 * merges) into its own memory at create time: the ks_gguf or ks_tok_vocab
 * it came from may be destroyed right after. Once created it is read-only:
 * every function below may be called from several threads at once. */
#ifndef KS_TOKENIZER_H
#define KS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"
#include "runtime/gguf.h"

typedef struct ks_tokenizer ks_tokenizer;

/* Token types, numbered as tokenizer.ggml.token_type (llama.cpp's
 * llama_token_type). */
typedef enum ks_tok_type {
    KS_TOK_UNDEFINED = 0,
    KS_TOK_NORMAL = 1,
    KS_TOK_UNKNOWN = 2,
    KS_TOK_CONTROL = 3,
    KS_TOK_USER_DEFINED = 4,
    KS_TOK_UNUSED = 5,
    KS_TOK_BYTE = 6,
} ks_tok_type;

typedef enum ks_tok_model {
    KS_TOK_MODEL_SPM = 1, /* tokenizer.ggml.model "llama" */
    KS_TOK_MODEL_BPE = 2, /* tokenizer.ggml.model "gpt2" */
} ks_tok_model;

/* Everything a tokenizer is made of, as plain arrays: what
 * ks_tokenizer_create fills from GGUF metadata, and what tests fill by
 * hand. All pointers are borrowed for the duration of
 * ks_tokenizer_create_from_vocab only. */
typedef struct ks_tok_vocab {
    ks_tok_model        model;
    const char         *pre;        /* BPE pre-tokenizer (tokenizer.ggml.pre):
                                     * "smollm", "qwen2", "qwen35",
                                     * "llama-bpe", "gpt-2", "falcon",
                                     * "deepseek-llm", "deepseek-coder",
                                     * "default", ... (k_pre in tokenizer.c).
                                     * NULL: GPT-2 rules, with a warning. An
                                     * unknown name is KS_ERR_UNSUPPORTED
                                     * unless pre_fallback_gpt2. Ignored for
                                     * SPM. */
    bool                pre_fallback_gpt2; /* unknown pre: GPT-2 rules
                                     * with a warning instead of an error */
    uint32_t            n_tokens;
    const char *const  *tokens;     /* [n_tokens] token texts */
    const size_t       *token_lens; /* [n_tokens] or NULL: strlen */
    const float        *scores;     /* [n_tokens] or NULL: all 0 */
    const int32_t      *types;      /* [n_tokens] ks_tok_type or NULL:
                                     * all normal */
    uint32_t            n_merges;   /* BPE: merges "left right", rank = */
    const char *const  *merges;     /* [n_merges] index (lower first) */
    const size_t       *merge_lens; /* [n_merges] or NULL: strlen */
    /* Special ids; negative: none. Out-of-range ids are ignored with a
     * warning. */
    int32_t             bos, eos, unk, eot, eom, pad, sep;
    /* 0: the model's default, 1: yes, -1: no. Defaults (llama.cpp): SPM
     * add_bos yes, add_space_prefix yes; BPE add_bos only for llama-bpe,
     * add_space_prefix no; add_eos no. */
    int8_t              add_bos, add_eos, add_space_prefix;
} ks_tok_vocab;

/* Reads tokenizer.ggml.* from |g| (see gguf-and-quants.md section 5).
 * KS_ERR_CORRUPT when a key has the wrong type or length (names the key),
 * KS_ERR_UNSUPPORTED for a tokenizer model other than llama/gpt2 or a
 * tokenizer.ggml.pre that Kestrel does not know (as llama.cpp; a missing
 * one gives llama.cpp's "default" rules with a warning), KS_ERR_NOMEM.
 * Nothing of |g| is kept. On failure *out is NULL. */
ks_status ks_tokenizer_create(const ks_gguf *g, ks_tokenizer **out);

/* Flags for ks_tokenizer_create_ex. */
enum {
    /* an unknown tokenizer.ggml.pre: GPT-2 rules with a warning */
    KS_TOK_CREATE_PRE_FALLBACK_GPT2 = 1,
};
ks_status ks_tokenizer_create_ex(const ks_gguf *g, unsigned flags,
                                 ks_tokenizer **out);

/* The same from plain arrays (tests, other loaders). KS_ERR_INVALID_ARG
 * for an empty vocabulary, an unknown model, or BPE merges NULL with
 * n_merges > 0. */
ks_status ks_tokenizer_create_from_vocab(const ks_tok_vocab *v,
                                         ks_tokenizer **out);

void ks_tokenizer_destroy(ks_tokenizer *t); /* NULL is a no-op */

/* Longest text one encode call takes (bytes); longer gives
 * KS_ERR_UNSUPPORTED. */
#define KS_TOK_MAX_TEXT (1u << 28)

/* Text -> token ids, as llama.cpp's llama_tokenize.
 * |add_special|: add BOS (and EOS) where the model's add_bos/add_eos
 * flags ask for them. |parse_special|: control and unknown-type tokens
 * written in the text (e.g. "<|im_start|>") become their ids; without it
 * they are plain text. User-defined tokens are always matched (as in
 * llama.cpp and HF tokenizers).
 * Count-then-fill: *n_out always gets the number of ids the text needs.
 * With out == NULL that is all (KS_OK); with cap < needed the first cap
 * ids are written and KS_ERR_INVALID_ARG returned. Malformed UTF-8 is
 * accepted: SPM keeps its bytes (byte tokens), BPE reads each bad byte as
 * U+FFFD as llama.cpp does. */
ks_status ks_tokenizer_encode(const ks_tokenizer *t, const char *text,
                              size_t len, bool add_special,
                              bool parse_special, int32_t *out, size_t cap,
                              size_t *n_out);

/* For tests and debugging: the words the BPE pre-tokenizer cuts |text|
 * into (no special-token splitting), as the byte offset where each word
 * ends. SPM has no pre-tokenizer: one word. Count-then-fill as encode. */
ks_status ks_tokenizer_pretokenize(const ks_tokenizer *t, const char *text,
                                   size_t len, size_t *ends, size_t cap,
                                   size_t *n_out);

/* Flags for the _ex calls. */
enum {
    KS_TOK_RENDER_SPECIAL = 1, /* control/unknown tokens give their text */
};

/* The bytes one token stands for, for streaming output: SPM "▁" -> space,
 * "<0xXX>" -> that byte; BPE byte-level code points -> bytes. Control and
 * unknown tokens give "" (their text with KS_TOK_RENDER_SPECIAL); unused
 * tokens and invalid ids give "". User-defined tokens give their text.
 * Returns the piece's full length and writes its first min(length, cap)
 * bytes to |buf| (as snprintf, but no NUL is added). A piece can be a
 * fragment of a UTF-8 character. */
size_t ks_tokenizer_piece(const ks_tokenizer *t, int32_t id, char *buf,
                          size_t cap);
size_t ks_tokenizer_piece_ex(const ks_tokenizer *t, int32_t id,
                             unsigned flags, char *buf, size_t cap);

/* Token ids -> text: the pieces joined. When the model adds a space
 * prefix (SPM add_space_prefix) one leading space of the first piece is
 * dropped; hidden leading BOS tokens do not count as first (llama.cpp
 * would keep the space after a BOS; we drop it so that decode(encode(x))
 * == x). The
 * GPT-2 and llama-bpe pre-tokenizers also undo the " ." " ," " 's" ...
 * spacing as llama.cpp's clean_spaces does.
 * Count-then-fill: *n_out gets the text's length in bytes, without NUL.
 * buf == NULL: KS_OK. cap < length: the text is cut, KS_ERR_INVALID_ARG.
 * A NUL follows the text when cap > length. */
ks_status ks_tokenizer_decode(const ks_tokenizer *t, const int32_t *ids,
                              size_t n, char *buf, size_t cap,
                              size_t *n_out);
ks_status ks_tokenizer_decode_ex(const ks_tokenizer *t, const int32_t *ids,
                                 size_t n, unsigned flags, char *buf,
                                 size_t cap, size_t *n_out);

/* Special ids; -1 if the model has none. */
int32_t ks_tokenizer_bos(const ks_tokenizer *t);
int32_t ks_tokenizer_eos(const ks_tokenizer *t);
int32_t ks_tokenizer_unk(const ks_tokenizer *t);
bool    ks_tokenizer_add_bos(const ks_tokenizer *t);
bool    ks_tokenizer_add_eos(const ks_tokenizer *t);

/* End of generation: eos, eot, eom, the FIM pad/repo/file-separator
 * tokens, and every token whose text is one of <|im_end|>, <|eot_id|>,
 * <|end|>, <end_of_turn>, <|endoftext|>, <|eom_id|>, <|end_of_text|>,
 * <EOT>, ... (llama.cpp's list). */
bool ks_tokenizer_is_eog(const ks_tokenizer *t, int32_t id);

/* True for control/unknown tokens (those decode hides). */
bool ks_tokenizer_is_control(const ks_tokenizer *t, int32_t id);

/* The id whose text is exactly |text| (NUL-terminated), -1 if none. Where
 * several ids share a text the highest wins (as in llama.cpp). */
int32_t ks_tokenizer_find(const ks_tokenizer *t, const char *text);

/* The raw vocabulary text of |id| (e.g. "▁the", "Ġthe", "<|im_end|>"),
 * NUL-terminated, borrowed from |t|; NULL for an invalid id. */
const char *ks_tokenizer_text(const ks_tokenizer *t, int32_t id,
                              size_t *len);

uint32_t    ks_tokenizer_n_vocab(const ks_tokenizer *t);
/* "llama" or "gpt2". */
const char *ks_tokenizer_model_name(const ks_tokenizer *t);
/* The BPE pre-tokenizer rules in use (a k_pre name; "gpt-2" also for an
 * unknown name taken with pre_fallback_gpt2; "default" for SPM). */
const char *ks_tokenizer_pre_name(const ks_tokenizer *t);

#endif
