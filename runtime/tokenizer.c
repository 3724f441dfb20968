/* Tokenizer: text <-> token ids for SentencePiece BPE ("llama") and
 * byte-level BPE ("gpt2") vocabularies, built from GGUF metadata.
 *
 * Ground truth is llama.cpp's llama-vocab.cpp; this file reimplements its
 * behaviour, not its code:
 *
 *   encode: text --split out special tokens (longest first)--> fragments
 *     SPM: fragment --(" " prefix) spaces->U+2581--> UTF-8 symbols
 *          --merge the pair whose concatenation is the highest-scored
 *          token, leftmost on ties--> tokens, byte tokens for the rest
 *     BPE: fragment --lenient UTF-8 decode--> code points --hand-written
 *          pre-tokenizer (regex of tokenizer.ggml.pre)--> words
 *          --GPT-2 byte->code point map--> symbols --merge the pair with
 *          the lowest merge rank, leftmost on ties--> tokens
 *   decode: token -> piece (SPM U+2581->space, <0xXX>->byte; BPE code
 *           point->byte), pieces joined.
 *
 * Memory: create copies all token texts into one arena and builds open-
 * addressing hash tables (text -> id, merge pair -> rank) in one pass,
 * with no allocation per token; special tokens go into a byte trie for the
 * splitting step. Encode allocates its scratch per call, so the tokenizer
 * stays read-only and shareable between threads. */
#include "runtime/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/unicode.h"

/* Token attributes (bits), after llama.cpp's llama_token_attr. */
enum {
    ATTR_NORMAL = 1u << 0,
    ATTR_UNKNOWN = 1u << 1,
    ATTR_CONTROL = 1u << 2,
    ATTR_USER_DEFINED = 1u << 3,
    ATTR_UNUSED = 1u << 4,
    ATTR_BYTE = 1u << 5,
    ATTR_EOG = 1u << 7, /* not a type: member of the end-of-generation set */
    ATTR_TYPE_MASK = 0x3Fu,
};

/* Pre-tokenizer rule sets (regexes in gguf-and-quants.md section 5). */
typedef enum pre_kind {
    PRE_GPT2,   /* 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    PRE_SMOLLM, /* \p{N} first, then PRE_GPT2 */
    PRE_QWEN2,  /* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
    PRE_LLAMA3, /* as PRE_QWEN2 with \p{N}{1,3} */
    PRE_QWEN35, /* as PRE_QWEN2 with [\p{L}\p{M}]+ for the letters and
                 * [^\s\p{L}\p{M}\p{N}]+ for the punctuation */
    /* Several regexes, each splitting the pieces the one before it left
     * (stage tables further down): */
    PRE_DEFAULT,        /* llama.cpp's default for BPE */
    PRE_FALCON,
    PRE_DEEPSEEK_LLM,
    PRE_DEEPSEEK_CODER,
} pre_kind;

typedef struct pre_info {
    const char *name;
    pre_kind    kind;
    bool        clean_spaces;  /* llama.cpp's clean_spaces for this pre */
    bool        add_bos;       /* default add_bos */
    bool        ignore_merges; /* a word that is a token is not merged */
} pre_info;

/* tokenizer.ggml.pre values, with llama.cpp's flags for each. */
static const pre_info k_pre[] = {
    { "gpt-2", PRE_GPT2, true, false, false },
    { "phi-2", PRE_GPT2, true, false, false },
    { "mpt", PRE_GPT2, true, false, false },
    { "olmo", PRE_GPT2, true, false, false },
    { "jais", PRE_GPT2, true, false, false },
    { "exaone4", PRE_GPT2, true, false, false },
    { "trillion", PRE_GPT2, false, false, false },
    { "granite-docling", PRE_GPT2, false, false, false },
    { "smollm", PRE_SMOLLM, false, false, false },
    { "starcoder", PRE_SMOLLM, true, false, false },
    { "refact", PRE_SMOLLM, true, false, false },
    { "command-r", PRE_SMOLLM, false, false, false },
    { "codeshell", PRE_SMOLLM, true, false, false },
    { "exaone", PRE_SMOLLM, true, false, false },
    { "minerva-7b", PRE_SMOLLM, true, false, false },
    { "mellum2", PRE_SMOLLM, true, false, false },
    { "qwen2", PRE_QWEN2, false, false, false },
    { "deepseek-r1-qwen", PRE_QWEN2, false, false, false },
    { "kormo", PRE_QWEN2, false, false, false },
    { "f2llmv2", PRE_QWEN2, false, false, false },
    { "megrez", PRE_QWEN2, true, false, false },
    { "stablelm2", PRE_QWEN2, true, false, false },
    { "hunyuan", PRE_QWEN2, false, false, false },
    { "solar-open", PRE_QWEN2, false, false, false },
    { "llama3", PRE_LLAMA3, true, true, true },
    { "llama-v3", PRE_LLAMA3, true, true, true },
    { "llama-bpe", PRE_LLAMA3, true, true, true },
    { "falcon3", PRE_LLAMA3, true, true, true },
    { "falcon-h1", PRE_LLAMA3, true, true, true },
    { "pixtral", PRE_LLAMA3, true, true, true },
    { "midm-2.0", PRE_LLAMA3, true, true, true },
    { "lfm2", PRE_LLAMA3, true, true, true },
    { "dbrx", PRE_LLAMA3, true, false, false },
    { "smaug-bpe", PRE_LLAMA3, true, false, false },
    { "qwen35", PRE_QWEN35, false, false, false },
    { "default", PRE_DEFAULT, true, false, false },
    { "falcon", PRE_FALCON, true, false, false },
    { "deepseek-llm", PRE_DEEPSEEK_LLM, false, false, false },
    { "deepseek-coder", PRE_DEEPSEEK_CODER, false, false, false },
};

struct ks_tokenizer {
    ks_tok_model model;
    pre_kind     pre;
    const char  *pre_name;       /* static string */
    uint32_t     n_tokens;

    char        *text;           /* all token texts, each NUL-terminated */
    uint32_t    *text_off;       /* [n_tokens] offset in |text| */
    uint32_t    *text_len;       /* [n_tokens] */
    float       *scores;         /* [n_tokens] */
    uint8_t     *attr;           /* [n_tokens] ATTR_* */

    uint32_t    *tok_slots;      /* text -> id + 1; 0 empty */
    uint32_t     tok_mask;

    uint32_t     n_merges;
    char        *merge_text;     /* merge strings, "left right" */
    uint32_t    *merge_off;      /* [n_merges] */
    uint32_t    *merge_left;     /* [n_merges] bytes of the left part */
    uint32_t    *merge_right;    /* [n_merges] bytes of the right part */
    uint32_t    *merge_slots;    /* (left, right) -> rank + 1; 0 empty */
    uint32_t     merge_mask;

    /* Special tokens (control, user-defined, unknown) in a byte trie. */
    int32_t     *trie_child;     /* [n_nodes] first child or -1 */
    int32_t     *trie_next;      /* [n_nodes] next sibling or -1 */
    int32_t     *trie_tok;       /* [n_nodes] token ending here or -1 */
    uint8_t     *trie_byte;      /* [n_nodes] */
    uint32_t     n_nodes;        /* node 0 is the root */
    uint32_t     n_special;

    int32_t      byte_tok[256];  /* SPM byte fallback: <0xXX> or the byte */

    int32_t      bos, eos, unk, eot, eom, pad, sep;
    bool         add_bos, add_eos, add_space_prefix;
    bool         clean_spaces, ignore_merges;
};

/* ---------------------------------------------------------------------- */
/* hashing                                                                 */

static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t
hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *s = p;
    uint64_t h = mix64(seed ^ (n * 0x9E3779B97F4A7C15ull));

    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = mix64(h ^ v) + 0x9E3779B97F4A7C15ull;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, s, n);
        h = mix64(h ^ v ^ ((uint64_t)n << 56));
    }
    return h;
}

static uint64_t
hash_pair(const char *a, size_t na, const char *b, size_t nb)
{
    return mix64(hash_bytes(a, na, 0x51) ^ (hash_bytes(b, nb, 0x7A) << 1));
}

static uint32_t
table_size(uint64_t n)
{
    uint64_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    return (uint32_t)cap;
}

static int32_t
find_token(const ks_tokenizer *t, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n, 0x3C) & t->tok_mask;

    for (;; i = (i + 1) & t->tok_mask) {
        uint32_t v = t->tok_slots[i];
        if (!v)
            return -1;
        uint32_t id = v - 1;
        if (t->text_len[id] == n &&
            memcmp(t->text + t->text_off[id], s, n) == 0)
            return (int32_t)id;
    }
}

static int32_t
find_merge(const ks_tokenizer *t, const char *a, size_t na, const char *b,
           size_t nb)
{
    if (!t->n_merges)
        return -1;
    uint32_t i = (uint32_t)hash_pair(a, na, b, nb) & t->merge_mask;

    for (;; i = (i + 1) & t->merge_mask) {
        uint32_t v = t->merge_slots[i];
        if (!v)
            return -1;
        uint32_t r = v - 1;
        const char *m = t->merge_text + t->merge_off[r];
        if (t->merge_left[r] == na && t->merge_right[r] == nb &&
            memcmp(m, a, na) == 0 && memcmp(m + na + 1, b, nb) == 0)
            return (int32_t)r;
    }
}

/* ---------------------------------------------------------------------- */
/* building                                                                */

static const char *
tok_text(const ks_tokenizer *t, int32_t id)
{
    return t->text + t->text_off[id];
}

/* Adds the control attribute to |id|, as llama.cpp does for control-
 * looking tokens that the file typed otherwise. */
static void
force_control(ks_tokenizer *t, uint32_t id)
{
    if (!(t->attr[id] & ATTR_CONTROL)) {
        ks_log(KS_LOG_DEBUG, "tok", "token %u '%s' treated as control",
               id, tok_text(t, (int32_t)id));
        t->attr[id] |= ATTR_CONTROL;
    }
}

/* Token texts that llama.cpp recognises (llama-vocab.cpp, load(), in the
 * version vendored by llama-cpp-python 0.3.36). */
#define FW "\xEF\xBD\x9C"      /* U+FF5C fullwidth vertical line */
#define LB "\xE2\x96\x81"      /* U+2581 lower one eighth block */
static const char *const k_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
    "<" FW "end" LB "of" LB "sentence" FW ">", "<end_of_utterance>", NULL,
};
static const char *const k_eom_texts[] = { "<|eom_id|>", NULL };
static const char *const k_fim_pre_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<" FW "fim" LB "begin"
    FW ">", "<PRE>", LB "<PRE>", "<|code_prefix|>", "<|prefix|>", NULL,
};
static const char *const k_fim_suf_texts[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<" FW "fim" LB "hole"
    FW ">", "<SUF>", LB "<SUF>", "<|code_suffix|>", "<|suffix|>", NULL,
};
static const char *const k_fim_mid_texts[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<" FW "fim" LB "end"
    FW ">", "<MID>", LB "<MID>", "<|code_middle|>", "<|middle|>", NULL,
};
static const char *const k_fim_pad_texts[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL,
};
static const char *const k_fim_rep_texts[] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    NULL,
};
static const char *const k_fim_sep_texts[] = { "<|file_sep|>", NULL };
static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
    "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<" FW "end" LB "of" LB "sentence" FW ">", "[e~[", NULL,
};
static const char *const k_render_texts[] = { /* gpt-oss, always shown */
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL,
};
#undef FW
#undef LB

static void
mark_eog(ks_tokenizer *t, int32_t id)
{
    if (id >= 0 && (uint32_t)id < t->n_tokens)
        t->attr[id] |= ATTR_EOG;
}

/* The lowest id whose text is in |list| (llama.cpp looks through its
 * text -> id map, so of tokens sharing a text only the highest id counts,
 * as find_token gives), or -1. */
static int32_t
first_of(const ks_tokenizer *t, const char *const *list)
{
    int32_t best = -1;
    for (; *list; list++) {
        int32_t id = find_token(t, *list, strlen(*list));
        if (id >= 0 && (best < 0 || id < best))
            best = id;
    }
    return best;
}

/* Finds a special role by its text unless the file named it, and makes
 * the token a control token. */
static int32_t
detect_role(ks_tokenizer *t, int32_t id, const char *const *list)
{
    if (id < 0) {
        id = first_of(t, list);
        if (id >= 0)
            force_control(t, (uint32_t)id);
    }
    return id;
}

static bool
eog_text_is(const ks_tokenizer *t, const char *s, int32_t *id_out)
{
    int32_t id = find_token(t, s, strlen(s));
    if (id >= 0 && (t->attr[id] & ATTR_EOG)) {
        if (id_out)
            *id_out = id;
        return true;
    }
    return false;
}

/* The end-of-generation set and the type fixes that go with it, in the
 * order llama.cpp's load() applies them. */
static void
detect_specials(ks_tokenizer *t)
{
    int32_t end_id = -1, s_id = -1;

    t->eot = detect_role(t, t->eot, k_eot_texts);
    t->eom = detect_role(t, t->eom, k_eom_texts);
    detect_role(t, -1, k_fim_pre_texts);
    detect_role(t, -1, k_fim_suf_texts);
    detect_role(t, -1, k_fim_mid_texts);
    mark_eog(t, detect_role(t, -1, k_fim_pad_texts));
    mark_eog(t, detect_role(t, -1, k_fim_rep_texts));
    mark_eog(t, detect_role(t, -1, k_fim_sep_texts));
    for (const char *const *p = k_eog_texts; *p; p++) {
        int32_t id = find_token(t, *p, strlen(*p));
        if (id >= 0) {
            t->attr[id] |= ATTR_EOG;
            force_control(t, (uint32_t)id);
        }
    }
    for (const char *const *p = k_render_texts; *p; p++) {
        int32_t id = find_token(t, *p, strlen(*p));
        if (id >= 0)
            t->attr[id] = (uint8_t)(ATTR_USER_DEFINED |
                                    (t->attr[id] & ATTR_EOG));
    }
    mark_eog(t, t->eos);
    mark_eog(t, t->eot);
    mark_eog(t, t->eom);
    /* o200k_harmony and solar-open: <|end|> is not an end there; gemma4
     * and plamo: </s> is a normal token */
    if (eog_text_is(t, "<|end|>", &end_id) &&
        (eog_text_is(t, "<|call|>", NULL) || eog_text_is(t, "<|calls|>", NULL)) &&
        (eog_text_is(t, "<|return|>", NULL) || eog_text_is(t, "<|flush|>", NULL)))
        t->attr[end_id] = ATTR_USER_DEFINED;
    if ((eog_text_is(t, "<|tool_response>", NULL) ||
         eog_text_is(t, "<|plamo:eos|>", NULL)) &&
        eog_text_is(t, "</s>", &s_id))
        t->attr[s_id] = ATTR_NORMAL;
}

/* Byte trie of the special tokens' texts. Where two specials share a text
 * the lower id is kept. */
static ks_status
build_trie(ks_tokenizer *t)
{
    uint64_t n_bytes = 1;
    uint32_t n_special = 0;

    for (uint32_t id = 0; id < t->n_tokens; id++) {
        if (t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
            n_bytes += t->text_len[id];
            n_special++;
        }
    }
    if (n_bytes > INT32_MAX)
        return ks_error(KS_ERR_UNSUPPORTED,
                        "tokenizer: special tokens too long (%llu bytes)",
                        (unsigned long long)n_bytes);
    t->n_special = n_special;
    t->trie_child = malloc(n_bytes * sizeof(int32_t));
    t->trie_next = malloc(n_bytes * sizeof(int32_t));
    t->trie_tok = malloc(n_bytes * sizeof(int32_t));
    t->trie_byte = malloc(n_bytes);
    if (!t->trie_child || !t->trie_next || !t->trie_tok || !t->trie_byte)
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory for %u special "
                        "tokens", n_special);
    t->trie_child[0] = t->trie_next[0] = t->trie_tok[0] = -1;
    t->trie_byte[0] = 0;
    t->n_nodes = 1;
    for (uint32_t id = 0; id < t->n_tokens; id++) {
        if (!(t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)))
            continue;
        const uint8_t *s = (const uint8_t *)tok_text(t, (int32_t)id);
        int32_t node = 0;
        for (uint32_t k = 0; k < t->text_len[id]; k++) {
            int32_t c = t->trie_child[node];
            while (c >= 0 && t->trie_byte[c] != s[k])
                c = t->trie_next[c];
            if (c < 0) {
                c = (int32_t)t->n_nodes++;
                t->trie_byte[c] = s[k];
                t->trie_child[c] = -1;
                t->trie_tok[c] = -1;
                t->trie_next[c] = t->trie_child[node];
                t->trie_child[node] = c;
            }
            node = c;
        }
        if (node > 0 && t->trie_tok[node] < 0)
            t->trie_tok[node] = (int32_t)id;
    }
    return KS_OK;
}

static int32_t
checked_id(const ks_tokenizer *t, int32_t id, const char *what)
{
    if (id >= 0 && (uint32_t)id >= t->n_tokens) {
        ks_log(KS_LOG_WARN, "tok", "%s id %d is past the vocabulary (%u "
               "tokens); ignored", what, id, t->n_tokens);
        return -1;
    }
    return id < 0 ? -1 : id;
}

static const pre_info *
find_pre(const char *name, bool *known)
{
    *known = false;
    if (name) {
        for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++) {
            if (strcmp(k_pre[i].name, name) == 0) {
                *known = true;
                return &k_pre[i];
            }
        }
    }
    return &k_pre[0];
}

ks_status
ks_tokenizer_create_from_vocab(const ks_tok_vocab *v, ks_tokenizer **out)
{
    ks_status st = KS_OK;
    ks_tokenizer *t = NULL;
    uint64_t total = 0;

    *out = NULL;
    if (!v || !v->n_tokens || !v->tokens)
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: empty vocabulary");
    if (v->model != KS_TOK_MODEL_SPM && v->model != KS_TOK_MODEL_BPE)
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: model %d is neither "
                        "SPM (1) nor BPE (2)", (int)v->model);
    if (v->n_tokens > INT32_MAX)
        return ks_error(KS_ERR_UNSUPPORTED, "tokenizer: %u tokens is more "
                        "than ids can hold", v->n_tokens);
    if (v->model == KS_TOK_MODEL_BPE && (!v->merges && v->n_merges))
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: BPE vocabulary "
                        "without merges");

    t = calloc(1, sizeof(*t));
    if (!t)
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
    t->model = v->model;
    t->n_tokens = v->n_tokens;

    /* token texts: one arena; empty texts become "[EMPTY_<id>]" as in
     * llama.cpp so that they can never match text */
    for (uint32_t i = 0; i < v->n_tokens; i++) {
        size_t n = v->token_lens ? v->token_lens[i]
                                 : (v->tokens[i] ? strlen(v->tokens[i]) : 0);
        if (!v->tokens[i])
            n = 0;
        total += (n ? n : 24) + 1;
    }
    if (total > UINT32_MAX) {
        st = ks_error(KS_ERR_UNSUPPORTED, "tokenizer: token texts take %llu "
                      "bytes, more than 4 GiB", (unsigned long long)total);
        goto fail;
    }
    t->text = malloc(total);
    t->text_off = malloc(v->n_tokens * sizeof(uint32_t));
    t->text_len = malloc(v->n_tokens * sizeof(uint32_t));
    t->scores = malloc(v->n_tokens * sizeof(float));
    t->attr = malloc(v->n_tokens);
    t->tok_mask = table_size(v->n_tokens) - 1;
    t->tok_slots = calloc((size_t)t->tok_mask + 1, sizeof(uint32_t));
    if (!t->text || !t->text_off || !t->text_len || !t->scores || !t->attr ||
        !t->tok_slots) {
        st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory for %u tokens",
                      v->n_tokens);
        goto fail;
    }
    {
        uint32_t off = 0;
        for (uint32_t i = 0; i < v->n_tokens; i++) {
            const char *s = v->tokens[i];
            size_t n = s ? (v->token_lens ? v->token_lens[i] : strlen(s)) : 0;
            char *dst = t->text + off;
            if (n) {
                memcpy(dst, s, n);
            } else {
                n = (size_t)snprintf(dst, 25, "[EMPTY_%u]", i);
                ks_log(KS_LOG_WARN, "tok", "empty token at index %u", i);
            }
            dst[n] = '\0';
            t->text_off[i] = off;
            t->text_len[i] = (uint32_t)n;
            off += (uint32_t)n + 1;

            t->scores[i] = v->scores ? v->scores[i] : 0.0f;
            int32_t ty = v->types ? v->types[i] : KS_TOK_NORMAL;
            switch (ty) {
            case KS_TOK_NORMAL: t->attr[i] = ATTR_NORMAL; break;
            case KS_TOK_UNKNOWN: t->attr[i] = ATTR_UNKNOWN; break;
            case KS_TOK_CONTROL: t->attr[i] = ATTR_CONTROL; break;
            case KS_TOK_USER_DEFINED: t->attr[i] = ATTR_USER_DEFINED; break;
            case KS_TOK_UNUSED: t->attr[i] = ATTR_UNUSED; break;
            case KS_TOK_BYTE: t->attr[i] = ATTR_BYTE; break;
            default: t->attr[i] = 0; break;
            }

            /* insert; a later duplicate text replaces the earlier id */
            uint32_t h = (uint32_t)hash_bytes(dst, n, 0x3C) & t->tok_mask;
            for (;; h = (h + 1) & t->tok_mask) {
                uint32_t cur = t->tok_slots[h];
                if (!cur || (t->text_len[cur - 1] == n &&
                             memcmp(t->text + t->text_off[cur - 1], dst,
                                    n) == 0)) {
                    t->tok_slots[h] = i + 1;
                    break;
                }
            }
        }
    }

    /* merges: "left right", split at the first space after byte 0 */
    if (v->model == KS_TOK_MODEL_BPE && v->n_merges) {
        uint64_t mtotal = 0;
        for (uint32_t i = 0; i < v->n_merges; i++)
            mtotal += (v->merge_lens ? v->merge_lens[i]
                                     : strlen(v->merges[i])) + 1;
        if (mtotal > UINT32_MAX) {
            st = ks_error(KS_ERR_UNSUPPORTED, "tokenizer: merges take %llu "
                          "bytes, more than 4 GiB",
                          (unsigned long long)mtotal);
            goto fail;
        }
        t->n_merges = v->n_merges;
        t->merge_text = malloc(mtotal ? mtotal : 1);
        t->merge_off = malloc(v->n_merges * sizeof(uint32_t));
        t->merge_left = malloc(v->n_merges * sizeof(uint32_t));
        t->merge_right = malloc(v->n_merges * sizeof(uint32_t));
        t->merge_mask = table_size(v->n_merges) - 1;
        t->merge_slots = calloc((size_t)t->merge_mask + 1, sizeof(uint32_t));
        if (!t->merge_text || !t->merge_off || !t->merge_left ||
            !t->merge_right || !t->merge_slots) {
            st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory for %u merges",
                          v->n_merges);
            goto fail;
        }
        uint32_t off = 0;
        for (uint32_t i = 0; i < v->n_merges; i++) {
            const char *s = v->merges[i];
            size_t n = v->merge_lens ? v->merge_lens[i] : strlen(s);
            char *dst = t->merge_text + off;
            memcpy(dst, s, n);
            dst[n] = '\0';
            t->merge_off[i] = off;
            off += (uint32_t)n + 1;
            const char *sp = n > 1 ? memchr(dst + 1, ' ', n - 1) : NULL;
            if (!sp) {
                /* llama.cpp would store an unusable ("", "") pair */
                t->merge_left[i] = t->merge_right[i] = UINT32_MAX;
                continue;
            }
            size_t nl = (size_t)(sp - dst), nr = n - nl - 1;
            t->merge_left[i] = (uint32_t)nl;
            t->merge_right[i] = (uint32_t)nr;
            uint32_t h = (uint32_t)hash_pair(dst, nl, sp + 1, nr) &
                         t->merge_mask;
            for (;; h = (h + 1) & t->merge_mask) {
                uint32_t cur = t->merge_slots[h];
                if (!cur) {
                    t->merge_slots[h] = i + 1;
                    break;
                }
                const char *m = t->merge_text + t->merge_off[cur - 1];
                if (t->merge_left[cur - 1] == nl &&
                    t->merge_right[cur - 1] == nr &&
                    memcmp(m, dst, n) == 0)
                    break;     /* duplicate pair: the first rank stays */
            }
        }
    }

    /* flags and special ids */
    if (v->model == KS_TOK_MODEL_SPM) {
        t->pre = PRE_GPT2;
        t->pre_name = "default";
        t->add_bos = true;
        t->add_space_prefix = true;
    } else {
        bool known;
        const pre_info *p = find_pre(v->pre, &known);
        if (!known && v->pre && !v->pre_fallback_gpt2) {
            /* as llama.cpp, which refuses such a vocabulary */
            st = ks_error(KS_ERR_UNSUPPORTED, "tokenizer.ggml.pre '%s' is "
                          "not a pre-tokenizer Kestrel knows, so its token "
                          "ids would differ from the model's own tokenizer; "
                          "to use the GPT-2 rules anyway, load with "
                          "ks_model_params.pre_fallback_gpt2 (kestrel "
                          "--pre-fallback-gpt2)", v->pre);
            goto fail;
        }
        if (!known)
            ks_log(KS_LOG_WARN, "tok", "pre-tokenizer '%s' is not known; "
                   "using the GPT-2 rules (token ids may differ from the "
                   "model's own tokenizer)", v->pre ? v->pre : "(none)");
        t->pre = p->kind;
        t->pre_name = p->name;
        t->clean_spaces = p->clean_spaces;
        t->add_bos = p->add_bos;
        t->ignore_merges = p->ignore_merges;
    }
    if (v->add_bos)
        t->add_bos = v->add_bos > 0;
    if (v->add_eos)
        t->add_eos = v->add_eos > 0;
    if (v->add_space_prefix)
        t->add_space_prefix = v->add_space_prefix > 0;
    t->bos = checked_id(t, v->bos, "bos");
    t->eos = checked_id(t, v->eos, "eos");
    t->unk = checked_id(t, v->unk, "unknown");
    t->eot = checked_id(t, v->eot, "eot");
    t->eom = checked_id(t, v->eom, "eom");
    t->pad = checked_id(t, v->pad, "padding");
    t->sep = checked_id(t, v->sep, "separator");
    detect_specials(t);

    for (int b = 0; b < 256; b++) {
        char hex[7];
        static const char digits[] = "0123456789ABCDEF";
        memcpy(hex, "<0x", 3);
        hex[3] = digits[b >> 4];
        hex[4] = digits[b & 15];
        hex[5] = '>';
        hex[6] = '\0';
        int32_t id = find_token(t, hex, 6);
        if (id < 0) {
            char c = (char)b;
            id = find_token(t, &c, 1);
        }
        t->byte_tok[b] = id;
    }

    if ((st = build_trie(t)) != KS_OK)
        goto fail;

    ks_log(KS_LOG_DEBUG, "tok", "%s tokenizer: %u tokens, %u merges, %u "
           "special, pre %s, bos %d eos %d add_bos %d add_eos %d "
           "space_prefix %d", ks_tokenizer_model_name(t), t->n_tokens,
           t->n_merges, t->n_special, t->pre_name, t->bos, t->eos,
           t->add_bos, t->add_eos, t->add_space_prefix);
    *out = t;
    return KS_OK;
fail:
    ks_tokenizer_destroy(t);
    return st;
}

void
ks_tokenizer_destroy(ks_tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->scores);
    free(t->attr);
    free(t->tok_slots);
    free(t->merge_text);
    free(t->merge_off);
    free(t->merge_left);
    free(t->merge_right);
    free(t->merge_slots);
    free(t->trie_child);
    free(t->trie_next);
    free(t->trie_tok);
    free(t->trie_byte);
    free(t);
}

/* ---------------------------------------------------------------------- */
/* from GGUF                                                               */

/* Reads an optional token id key; absent keeps *id. */
static void
read_id(const ks_gguf *g, const char *key, int32_t *id)
{
    uint64_t v;
    if (ks_gguf_get_u64(g, key, &v))
        *id = v > INT32_MAX ? INT32_MAX : (int32_t)v; /* checked later */
}

static void
read_flag(const ks_gguf *g, const char *key, int8_t *flag)
{
    bool b;
    if (ks_gguf_get_bool(g, key, &b))
        *flag = b ? 1 : -1;
}

static ks_status
get_array(const ks_gguf *g, const char *key, uint32_t want_type, bool numeric,
          uint64_t want_n, bool required, ks_gguf_arr *a, bool *present)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    *present = false;
    if (!kv) {
        if (required)
            return ks_error(KS_ERR_CORRUPT, "missing required metadata key "
                            "'%s'", key);
        return KS_OK;
    }
    if (kv->type != KS_GGUF_ARR || !ks_gguf_get_arr(g, key, a))
        return ks_error(KS_ERR_CORRUPT, "%s: expected an array, found %s",
                        key, ks_gguf_type_name(kv->type));
    if (numeric ? (ks_gguf_type_size(a->type) == 0 || a->type == KS_GGUF_BOOL)
                : a->type != want_type)
        return ks_error(KS_ERR_CORRUPT, "%s: expected an array of %s, found "
                        "an array of %s", key, ks_gguf_type_name(want_type),
                        ks_gguf_type_name(a->type));
    if (want_n && a->n != want_n)
        return ks_error(KS_ERR_CORRUPT, "%s: expected %llu elements (one per "
                        "token), found %llu", key,
                        (unsigned long long)want_n, (unsigned long long)a->n);
    *present = true;
    return KS_OK;
}

ks_status
ks_tokenizer_create(const ks_gguf *g, ks_tokenizer **out)
{
    return ks_tokenizer_create_ex(g, 0, out);
}

ks_status
ks_tokenizer_create_ex(const ks_gguf *g, unsigned flags, ks_tokenizer **out)
{
    ks_status st;
    ks_tok_vocab v;
    ks_gguf_arr toks, scores, types, merges;
    bool has_toks, has_scores, has_types, has_merges = false;
    const char **tok_ptr = NULL, **merge_ptr = NULL;
    size_t *tok_len = NULL, *merge_len = NULL;
    float *score = NULL;
    int32_t *type = NULL;

    *out = NULL;
    memset(&v, 0, sizeof(v));
    const char *model = ks_gguf_get_str(g, "tokenizer.ggml.model", NULL);
    if (!model)
        return ks_error(KS_ERR_CORRUPT, "missing required metadata key "
                        "'tokenizer.ggml.model' (or not a string)");
    if (strcmp(model, "llama") == 0) {
        v.model = KS_TOK_MODEL_SPM;
        v.bos = 1;
        v.eos = 2;
        v.unk = 0;
    } else if (strcmp(model, "gpt2") == 0) {
        v.model = KS_TOK_MODEL_BPE;
        v.bos = v.eos = 11;    /* llama.cpp's placeholder defaults */
        v.unk = -1;
    } else {
        return ks_error(KS_ERR_UNSUPPORTED, "tokenizer.ggml.model '%s' is not "
                        "supported (expected 'llama' or 'gpt2')", model);
    }
    v.eot = v.eom = v.pad = v.sep = -1;
    v.pre = ks_gguf_get_str(g, "tokenizer.ggml.pre", NULL);
    v.pre_fallback_gpt2 = (flags & KS_TOK_CREATE_PRE_FALLBACK_GPT2) != 0;
    if (v.model == KS_TOK_MODEL_BPE && (!v.pre || !*v.pre)) {
        /* llama.cpp takes its "default" rules, with a warning */
        ks_log(KS_LOG_WARN, "tok", "tokenizer.ggml.pre is missing; using "
               "llama.cpp's 'default' pre-tokenizer (token ids may differ "
               "from the model's own tokenizer)");
        v.pre = "default";
    }

    if ((st = get_array(g, "tokenizer.ggml.tokens", KS_GGUF_STR, false, 0,
                        true, &toks, &has_toks)) != KS_OK)
        return st;
    if (toks.n == 0 || toks.n > INT32_MAX)
        return ks_error(KS_ERR_CORRUPT, "tokenizer.ggml.tokens: expected 1 to "
                        "%d tokens, found %llu", INT32_MAX,
                        (unsigned long long)toks.n);
    v.n_tokens = (uint32_t)toks.n;
    if ((st = get_array(g, "tokenizer.ggml.scores", KS_GGUF_F32, true, toks.n,
                        false, &scores, &has_scores)) != KS_OK)
        return st;
    if ((st = get_array(g, "tokenizer.ggml.token_type", KS_GGUF_I32, true,
                        toks.n, false, &types, &has_types)) != KS_OK)
        return st;
    if (v.model == KS_TOK_MODEL_BPE) {
        if ((st = get_array(g, "tokenizer.ggml.merges", KS_GGUF_STR, false, 0,
                            true, &merges, &has_merges)) != KS_OK)
            return st;
        if (merges.n > UINT32_MAX)
            return ks_error(KS_ERR_CORRUPT, "tokenizer.ggml.merges: %llu "
                            "merges is too many",
                            (unsigned long long)merges.n);
    }

    tok_ptr = malloc(toks.n * sizeof(*tok_ptr));
    tok_len = malloc(toks.n * sizeof(*tok_len));
    score = has_scores ? malloc(toks.n * sizeof(*score)) : NULL;
    type = has_types ? malloc(toks.n * sizeof(*type)) : NULL;
    if (!tok_ptr || !tok_len || (has_scores && !score) || (has_types && !type)) {
        st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory for %llu tokens",
                      (unsigned long long)toks.n);
        goto done;
    }
    for (uint64_t i = 0; i < toks.n; i++) {
        tok_ptr[i] = ks_gguf_arr_str(&toks, i, &tok_len[i]);
        if (!tok_ptr[i]) {
            st = ks_error(KS_ERR_CORRUPT, "tokenizer.ggml.tokens: element "
                          "%llu unreadable", (unsigned long long)i);
            goto done;
        }
        if (score)
            score[i] = (float)ks_gguf_arr_f64(&scores, i);
        if (type) {
            int64_t ty = ks_gguf_arr_i64(&types, i);
            type[i] = (ty < 0 || ty > 6) ? KS_TOK_UNDEFINED : (int32_t)ty;
        }
    }
    v.tokens = tok_ptr;
    v.token_lens = tok_len;
    v.scores = score;
    v.types = type;

    if (has_merges && merges.n) {
        merge_ptr = malloc(merges.n * sizeof(*merge_ptr));
        merge_len = malloc(merges.n * sizeof(*merge_len));
        if (!merge_ptr || !merge_len) {
            st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory for %llu "
                          "merges", (unsigned long long)merges.n);
            goto done;
        }
        for (uint64_t i = 0; i < merges.n; i++) {
            merge_ptr[i] = ks_gguf_arr_str(&merges, i, &merge_len[i]);
            if (!merge_ptr[i]) {
                st = ks_error(KS_ERR_CORRUPT, "tokenizer.ggml.merges: element "
                              "%llu unreadable", (unsigned long long)i);
                goto done;
            }
        }
        v.n_merges = (uint32_t)merges.n;
        v.merges = merge_ptr;
        v.merge_lens = merge_len;
    }

    read_id(g, "tokenizer.ggml.bos_token_id", &v.bos);
    read_id(g, "tokenizer.ggml.eos_token_id", &v.eos);
    read_id(g, "tokenizer.ggml.unknown_token_id", &v.unk);
    read_id(g, "tokenizer.ggml.eot_token_id", &v.eot);
    read_id(g, "tokenizer.ggml.eom_token_id", &v.eom);
    read_id(g, "tokenizer.ggml.padding_token_id", &v.pad);
    read_id(g, "tokenizer.ggml.seperator_token_id", &v.sep);
    read_id(g, "tokenizer.ggml.separator_token_id", &v.sep);
    /* llama.cpp keeps the default for an id past the vocabulary */
    {
        int32_t dflt_bos = v.model == KS_TOK_MODEL_SPM ? 1 : 11;
        int32_t dflt_eos = v.model == KS_TOK_MODEL_SPM ? 2 : 11;
        int32_t dflt_unk = v.model == KS_TOK_MODEL_SPM ? 0 : -1;
        if (v.bos >= (int64_t)v.n_tokens) {
            ks_log(KS_LOG_WARN, "tok", "bad bos id %d; using %d", v.bos,
                   dflt_bos);
            v.bos = dflt_bos;
        }
        if (v.eos >= (int64_t)v.n_tokens) {
            ks_log(KS_LOG_WARN, "tok", "bad eos id %d; using %d", v.eos,
                   dflt_eos);
            v.eos = dflt_eos;
        }
        if (v.unk >= (int64_t)v.n_tokens)
            v.unk = dflt_unk;
        if (v.eot >= (int64_t)v.n_tokens)
            v.eot = -1;
        if (v.eom >= (int64_t)v.n_tokens)
            v.eom = -1;
        if (v.pad >= (int64_t)v.n_tokens)
            v.pad = -1;
        if (v.sep >= (int64_t)v.n_tokens)
            v.sep = -1;
    }
    read_flag(g, "tokenizer.ggml.add_bos_token", &v.add_bos);
    read_flag(g, "tokenizer.ggml.add_eos_token", &v.add_eos);
    read_flag(g, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix);

    st = ks_tokenizer_create_from_vocab(&v, out);
    if (st == KS_OK) {
        int32_t fp = -1, fr = -1, fs = -1;
        read_id(g, "tokenizer.ggml.fim_pad_token_id", &fp);
        read_id(g, "tokenizer.ggml.fim_rep_token_id", &fr);
        read_id(g, "tokenizer.ggml.fim_sep_token_id", &fs);
        mark_eog(*out, fp);
        mark_eog(*out, fr);
        mark_eog(*out, fs);
    }
done:
    free(tok_ptr);
    free(tok_len);
    free(score);
    free(type);
    free(merge_ptr);
    free(merge_len);
    return st;
}

/* ---------------------------------------------------------------------- */
/* encoding                                                                */

typedef struct outbuf {
    int32_t *ids;
    size_t   cap;
    size_t   n;
} outbuf;

static inline void
emit(outbuf *o, int32_t id)
{
    if (o->ids && o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* A merge candidate: symbols |left| and |right| side by side, with the
 * SPM score of their concatenation (higher first) or the BPE rank of the
 * pair (lower first); |size| is their joint length when queued. */
typedef struct bigram {
    float    score;
    int32_t  rank;
    int32_t  left, right;
    uint32_t size;
} bigram;

/* Working memory of one encode call. */
typedef struct scratch {
    uint8_t  *bytes;   size_t bytes_cap;   /* SPM text / BPE word */
    int32_t  *sym;     size_t sym_cap;     /* 4 ints per symbol */
    bigram   *heap;    size_t heap_cap;    size_t heap_n;
    uint32_t *cps;     size_t cps_cap;
    uint8_t  *fl;      size_t fl_cap;
    uint32_t *ends;    size_t ends_cap;
    uint32_t *ends2;   size_t ends2_cap;   /* multi-regex pre-tokenizers */
} scratch;

static bool
grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return false;
    *p = q;
    *cap = n;
    return true;
}

static void
scratch_free(scratch *s)
{
    free(s->bytes);
    free(s->sym);
    free(s->heap);
    free(s->cps);
    free(s->fl);
    free(s->ends);
    free(s->ends2);
}

static bool
better(const ks_tokenizer *t, const bigram *a, const bigram *b)
{
    if (t->model == KS_TOK_MODEL_SPM) {
        if (a->score != b->score)
            return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static bool
heap_push(const ks_tokenizer *t, scratch *s, const bigram *bg)
{
    if (!grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof(bigram)))
        return false;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!better(t, bg, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = *bg;
    return true;
}

static bigram
heap_pop(const ks_tokenizer *t, scratch *s)
{
    bigram top = s->heap[0];
    bigram last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && better(t, &s->heap[c + 1], &s->heap[c]))
            c++;
        if (!better(t, &s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

/* Symbols are runs of s->bytes: start, length, prev, next. */
#define SYM_START(s, i) ((s)->sym[4 * (size_t)(i) + 0])
#define SYM_N(s, i)     ((s)->sym[4 * (size_t)(i) + 1])
#define SYM_PREV(s, i)  ((s)->sym[4 * (size_t)(i) + 2])
#define SYM_NEXT(s, i)  ((s)->sym[4 * (size_t)(i) + 3])

/* Splits s->bytes[0..n) into UTF-8 characters (llama.cpp's way: length
 * from the lead byte, cut at the end). */
static ks_status
make_symbols(scratch *s, size_t n, int32_t *n_sym)
{
    int32_t k = 0;

    if (!grow((void **)&s->sym, &s->sym_cap, 4 * n, sizeof(int32_t)))
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
    for (size_t off = 0; off < n;) {
        size_t len = ks_utf8_len(s->bytes[off]);
        if (len > n - off)
            len = n - off;
        SYM_START(s, k) = (int32_t)off;
        SYM_N(s, k) = (int32_t)len;
        SYM_PREV(s, k) = k - 1;
        off += len;
        SYM_NEXT(s, k) = off == n ? -1 : k + 1;
        k++;
    }
    *n_sym = k;
    s->heap_n = 0;
    return KS_OK;
}

static bool
spm_add_bigram(const ks_tokenizer *t, scratch *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return true;
    size_t n = (size_t)SYM_N(s, l) + (size_t)SYM_N(s, r);
    int32_t id = find_token(t, (const char *)s->bytes + SYM_START(s, l), n);
    if (id < 0)
        return true;
    bigram bg = { t->scores[id], 0, l, r, (uint32_t)n };
    return heap_push(t, s, &bg);
}

static bool
bpe_add_bigram(const ks_tokenizer *t, scratch *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return true;
    const char *b = (const char *)s->bytes;
    int32_t rank = find_merge(t, b + SYM_START(s, l), (size_t)SYM_N(s, l),
                              b + SYM_START(s, r), (size_t)SYM_N(s, r));
    if (rank < 0)
        return true;
    bigram bg = { 0.0f, rank, l, r, (uint32_t)(SYM_N(s, l) + SYM_N(s, r)) };
    return heap_push(t, s, &bg);
}

/* Repeatedly merges the best pair; common to SPM and BPE. */
static ks_status
merge_symbols(const ks_tokenizer *t, scratch *s, int32_t n_sym)
{
    bool (*add)(const ks_tokenizer *, scratch *, int32_t, int32_t) =
        t->model == KS_TOK_MODEL_SPM ? spm_add_bigram : bpe_add_bigram;

    for (int32_t i = 1; i < n_sym; i++)
        if (!add(t, s, i - 1, i))
            goto nomem;
    while (s->heap_n) {
        bigram bg = heap_pop(t, s);
        int32_t l = bg.left, r = bg.right;
        /* a side that changed since the pair was queued makes it stale
         * (sizes only grow, or drop to 0 when merged away) */
        if (SYM_N(s, l) == 0 || SYM_N(s, r) == 0 ||
            (uint32_t)(SYM_N(s, l) + SYM_N(s, r)) != bg.size)
            continue;
        SYM_N(s, l) += SYM_N(s, r);
        SYM_N(s, r) = 0;
        SYM_NEXT(s, l) = SYM_NEXT(s, r);
        if (SYM_NEXT(s, r) >= 0)
            SYM_PREV(s, SYM_NEXT(s, r)) = l;
        if (!add(t, s, SYM_PREV(s, l), l) || !add(t, s, l, SYM_NEXT(s, l)))
            goto nomem;
    }
    return KS_OK;
nomem:
    return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
}

/* One raw text fragment through SentencePiece BPE. */
static ks_status
spm_fragment(const ks_tokenizer *t, scratch *s, const char *txt, size_t len,
             bool space_prefix, outbuf *o)
{
    ks_status st;
    int32_t n_sym;
    size_t n = 0;

    if (!grow((void **)&s->bytes, &s->bytes_cap, 3 * (len + 1), 1))
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
    if (space_prefix) {
        memcpy(s->bytes, "\xE2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (txt[i] == ' ') {
            memcpy(s->bytes + n, "\xE2\x96\x81", 3);
            n += 3;
        } else {
            s->bytes[n++] = (uint8_t)txt[i];
        }
    }
    if (n == 0)
        return KS_OK;
    if ((st = make_symbols(s, n, &n_sym)) != KS_OK)
        return st;
    if ((st = merge_symbols(t, s, n_sym)) != KS_OK)
        return st;
    for (int32_t i = 0; i != -1; i = SYM_NEXT(s, i)) {
        const uint8_t *p = s->bytes + SYM_START(s, i);
        size_t sn = (size_t)SYM_N(s, i);
        int32_t id = find_token(t, (const char *)p, sn);
        if (id >= 0) {
            emit(o, id);
            continue;
        }
        for (size_t k = 0; k < sn; k++) {
            id = t->byte_tok[p[k]];
            if (id < 0)
                id = t->unk;
            if (id < 0)
                return ks_error(KS_ERR_UNSUPPORTED, "tokenizer: byte 0x%02X "
                                "has no token and the vocabulary has no "
                                "unknown token", p[k]);
            emit(o, id);
        }
    }
    return KS_OK;
}

/* ---- BPE pre-tokenizers: each returns the end of the word at |pos| in
 * cps[pos..end) (the segment's end bounds every look-ahead). */

#define F_L KS_UCP_LETTER
#define F_N KS_UCP_NUMBER
#define F_S KS_UCP_SPACE
#define F_P KS_UCP_PUNCT
#define F_M KS_UCP_MARK

static size_t
word_gpt2(const uint32_t *cp, const uint8_t *fl, size_t pos, size_t end)
{
    uint32_t c = cp[pos];

    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (c == '\'' && pos + 1 < end) {
        uint32_t c1 = cp[pos + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
            return pos + 2;
        if (pos + 2 < end) {
            uint32_t c2 = cp[pos + 2];
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                (c1 == 'l' && c2 == 'l'))
                return pos + 3;
        }
    }
    /* ' ?' then a class: the optional space only if something follows */
    bool sp = c == ' ';
    bool valid = !sp || pos + 1 < end;
    uint8_t f2 = sp ? (pos + 1 < end ? fl[pos + 1] : 0) : fl[pos];
    if (valid && (f2 & F_L)) {                     /*  ?\p{L}+ */
        pos += sp;
        while (pos < end && (fl[pos] & F_L))
            pos++;
        return pos;
    }
    if (valid && (f2 & F_N)) {                     /*  ?\p{N}+ */
        pos += sp;
        while (pos < end && (fl[pos] & F_N))
            pos++;
        return pos;
    }
    if (valid && !(f2 & (F_S | F_L | F_N))) {      /*  ?[^\s\p{L}\p{N}]+ */
        pos += sp;
        while (pos < end && !(fl[pos] & (F_S | F_L | F_N)))
            pos++;
        return pos;
    }
    size_t nws = 0;
    while (pos + nws < end && (fl[pos + nws] & F_S))
        nws++;
    if (nws > 1 && pos + nws < end)                /* \s+(?!\S) */
        return pos + nws - 1;
    if (nws > 0)                                   /* \s+ */
        return pos + nws;
    return pos + 1;
}

static uint32_t
ascii_lower(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* The llama3 / qwen2 / qwen35 regex; |letters| is F_L, or F_L | F_M for
 * qwen35, whose letter runs take marks and whose punctuation runs do not. */
static size_t
word_llama3(const uint32_t *cp, const uint8_t *fl, size_t pos, size_t end,
            size_t max_digits, uint8_t letters)
{
    uint32_t c = cp[pos];
    uint8_t f = fl[pos];

    /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
    if (c == '\'' && pos + 1 < end) {
        uint32_t c1 = ascii_lower(cp[pos + 1]);
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
            return pos + 2;
        if (pos + 2 < end) {
            uint32_t c2 = ascii_lower(cp[pos + 2]);
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                (c1 == 'l' && c2 == 'l'))
                return pos + 3;
        }
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c != '\r' && c != '\n' && !(f & F_N)) {
        if ((f & letters) || (pos + 1 < end && (fl[pos + 1] & letters))) {
            pos++;
            while (pos < end && (fl[pos] & letters))
                pos++;
            return pos;
        }
    }
    /* \p{N}{1,max} */
    if (f & F_N) {
        size_t k = 0;
        while (pos < end && (fl[pos] & F_N) && k < max_digits) {
            pos++;
            k++;
        }
        return pos;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    bool sp = c == ' ';
    bool valid = !sp || pos + 1 < end;
    uint8_t f2 = sp ? (pos + 1 < end ? fl[pos + 1] : 0) : f;
    if (valid && !(f2 & (F_S | letters | F_N))) {
        pos += sp;
        while (pos < end && !(fl[pos] & (F_S | letters | F_N)))
            pos++;
        while (pos < end && (cp[pos] == '\r' || cp[pos] == '\n'))
            pos++;
        return pos;
    }
    size_t nws = 0, last_rn = 0;
    while (pos + nws < end && (fl[pos + nws] & F_S)) {
        uint32_t w = cp[pos + nws];
        if (w == '\r' || w == '\n')
            last_rn = pos + nws + 1;
        nws++;
    }
    if (last_rn)                                   /* \s*[\r\n]+ */
        return last_rn;
    if (nws > 1 && pos + nws < end)                /* \s+(?!\S) */
        return pos + nws - 1;
    if (nws > 0)                                   /* \s+ */
        return pos + nws;
    return pos + 1;
}

/* ---- Pre-tokenizers made of several regexes. llama.cpp runs each regex
 * over every piece the previous ones left, and keeps both the matches and
 * the text between them as pieces (unicode_regex_split). The regexes below
 * are those of llama.cpp's llm_tokenizer_bpe (llama-vocab.cpp); each is
 * matched leftmost-first within one piece, as std::regex_iterator does.
 *
 * Those regexes run on llama.cpp's view of the text: a code point above
 * U+007F that is white space reads as U+000B, so \s is exactly F_S and no
 * bracketed class ever holds non-ASCII white space; \p{..} classes see the
 * general category (the "collapsed" text), ASCII as itself. */

typedef bool (*cp_class)(uint32_t c, uint8_t f);

typedef enum stage_op {
    ST_RUN,         /* [class]+ */
    ST_ONE,         /* [class] */
    ST_SPACE_RUN,   /* \s?[class]+ */
    ST_DIGITS3,     /* [0-9][0-9][0-9] */
    ST_TRAIL_SPACE, /* \s+$ */
    ST_GPT2,        /* the GPT-2 regex, as llama.cpp's hand-written split */
} stage_op;

typedef struct stage {
    stage_op op;
    cp_class cls;
} stage;

static bool cls_cr_lf(uint32_t c, uint8_t f) { (void)f; return c == '\r' || c == '\n'; }
static bool cls_letter(uint32_t c, uint8_t f) { (void)c; return f & F_L; }
static bool cls_number(uint32_t c, uint8_t f) { (void)c; return f & F_N; }
static bool cls_punct(uint32_t c, uint8_t f) { (void)c; return f & F_P; }

/* [\p{P}\$\+<=>\^~\|]: punctuation and the ASCII symbols but ` */
static bool
cls_default_punct(uint32_t c, uint8_t f)
{
    return (f & F_P) || (c < 0x80 && c && strchr("$+<=>^~|", (int)c));
}

/* falcon: [\p{P}\$\+<=>\^~\|`], all ASCII symbols */
static bool
cls_falcon_punct(uint32_t c, uint8_t f)
{
    return cls_default_punct(c, f) || c == '`';
}

/* deepseek-llm's explicit letter ranges (cased letters of Latin, Greek,
 * Cyrillic, Armenian, Georgian, Cherokee, Glagolitic, Coptic, Deseret,
 * ... and the fullwidth Latin letters), from its regex */
static const uint32_t k_dsl_letters[][2] = {
    { 0x41, 0x5A }, { 0x61, 0x7A }, { 0xB5, 0xB5 }, { 0xC0, 0xD6 },
    { 0xD8, 0xF6 }, { 0xF8, 0x1BA }, { 0x1BC, 0x1BF }, { 0x1C4, 0x293 },
    { 0x295, 0x2AF }, { 0x370, 0x373 }, { 0x376, 0x377 }, { 0x37B, 0x37D },
    { 0x37F, 0x37F }, { 0x386, 0x386 }, { 0x388, 0x38A }, { 0x38C, 0x38C },
    { 0x38E, 0x3A1 }, { 0x3A3, 0x3F5 }, { 0x3F7, 0x481 }, { 0x48A, 0x52F },
    { 0x531, 0x556 }, { 0x10A0, 0x10C5 }, { 0x13A0, 0x13F5 },
    { 0x13F8, 0x13FD }, { 0x1C90, 0x1CBA }, { 0x1CBD, 0x1CBF },
    { 0x1D00, 0x1D2B }, { 0x1D6B, 0x1D77 }, { 0x1D79, 0x1D9A },
    { 0x1E00, 0x1F15 }, { 0x1F18, 0x1F1D }, { 0x1F20, 0x1F45 },
    { 0x1F48, 0x1F4D }, { 0x1F50, 0x1F57 }, { 0x1F59, 0x1F59 },
    { 0x1F5B, 0x1F5B }, { 0x1F5D, 0x1F5D }, { 0x1F5F, 0x1F7D },
    { 0x1F80, 0x1FB4 }, { 0x1FB6, 0x1FBC }, { 0x1FBE, 0x1FBE },
    { 0x1FC2, 0x1FC4 }, { 0x1FC6, 0x1FCC }, { 0x1FD0, 0x1FD3 },
    { 0x1FD6, 0x1FDB }, { 0x1FE0, 0x1FEC }, { 0x1FF2, 0x1FF4 },
    { 0x1FF6, 0x1FFC }, { 0x2102, 0x2102 }, { 0x2107, 0x2107 },
    { 0x210A, 0x2113 }, { 0x2115, 0x2115 }, { 0x2119, 0x211D },
    { 0x2124, 0x2124 }, { 0x2126, 0x2126 }, { 0x2128, 0x2128 },
    { 0x212A, 0x212D }, { 0x212F, 0x2134 }, { 0x2139, 0x2139 },
    { 0x213C, 0x213F }, { 0x2145, 0x2149 }, { 0x214E, 0x214E },
    { 0x2183, 0x2184 }, { 0x2C00, 0x2C7B }, { 0x2C7E, 0x2CE4 },
    { 0x2CEB, 0x2CEE }, { 0x2CF2, 0x2CF3 }, { 0xA640, 0xA66D },
    { 0xA680, 0xA69B }, { 0xA722, 0xA76F }, { 0xA771, 0xA787 },
    { 0xA78B, 0xA78E }, { 0xAB70, 0xABBF }, { 0xFB00, 0xFB06 },
    { 0xFB13, 0xFB17 }, { 0xFF21, 0xFF3A }, { 0xFF41, 0xFF5A },
    { 0x10400, 0x1044F }, { 0x104B0, 0x104D3 }, { 0x104D8, 0x104FB },
    { 0x10C80, 0x10CB2 }, { 0x10CC0, 0x10CF2 }, { 0x118A0, 0x118DF },
    { 0x1E900, 0x1E943 },
};

static bool
cls_dsl_letter(uint32_t c, uint8_t f)
{
    size_t lo = 0, hi = sizeof k_dsl_letters / sizeof k_dsl_letters[0];

    (void)f;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < k_dsl_letters[mid][0])
            hi = mid;
        else if (c > k_dsl_letters[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* deepseek-llm: [!-/:-~！-／：-～‘-‟　-。] (note :-~ holds the ASCII
 * letters too) */
static bool
cls_dsl_punct(uint32_t c, uint8_t f)
{
    (void)f;
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) ||
           (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF5E) ||
           (c >= 0x2018 && c <= 0x201F) || (c >= 0x3000 && c <= 0x3002);
}

/* deepseek: [一-龥ࠀ-一가-퟿], i.e. U+0800..U+9FA5 and U+AC00..U+D7FF */
static bool
cls_cjk(uint32_t c, uint8_t f)
{
    (void)f;
    return (c >= 0x0800 && c <= 0x9FA5) || (c >= 0xAC00 && c <= 0xD7FF);
}

static const stage k_default_stages[] = {
    { ST_RUN, cls_default_punct },
    { ST_GPT2, NULL },
    { ST_RUN, cls_number },
    { ST_DIGITS3, NULL },
};

static const stage k_falcon_stages[] = {
    { ST_RUN, cls_falcon_punct },
    { ST_GPT2, NULL },
    { ST_DIGITS3, NULL },
};

static const stage k_deepseek_llm_stages[] = {
    { ST_ONE, cls_cr_lf },
    { ST_SPACE_RUN, cls_dsl_letter },
    { ST_SPACE_RUN, cls_dsl_punct },
    { ST_TRAIL_SPACE, NULL },
    { ST_RUN, cls_cjk },
    { ST_RUN, cls_number },
};

static const stage k_deepseek_coder_stages[] = {
    { ST_ONE, cls_cr_lf },
    { ST_SPACE_RUN, cls_letter },
    { ST_SPACE_RUN, cls_punct },
    { ST_RUN, cls_cjk },
    { ST_ONE, cls_number },
};

/* Whether cp[i] is in |cls| as llama.cpp's regex sees it: non-ASCII white
 * space reads as U+000B, which no class here holds. */
static inline bool
in_class(cp_class cls, const uint32_t *cp, const uint8_t *fl, size_t i)
{
    if (cp[i] > 0x7F && (fl[i] & F_S))
        return false;
    return cls(cp[i], fl[i]);
}

static size_t
class_run(cp_class cls, const uint32_t *cp, const uint8_t *fl, size_t pos,
          size_t end)
{
    while (pos < end && in_class(cls, cp, fl, pos))
        pos++;
    return pos;
}

/* The leftmost match of |st| in cp[from..end) (none of these regexes
 * matches the empty string): true with [*m0, *m1), or false. */
static bool
stage_find(const stage *st, const uint32_t *cp, const uint8_t *fl,
           size_t from, size_t end, size_t *m0, size_t *m1)
{
    size_t p;

    switch (st->op) {
    case ST_RUN:
    case ST_ONE:
        for (p = from; p < end; p++) {
            if (in_class(st->cls, cp, fl, p)) {
                *m0 = p;
                *m1 = st->op == ST_ONE ? p + 1
                                       : class_run(st->cls, cp, fl, p, end);
                return true;
            }
        }
        return false;
    case ST_SPACE_RUN:
        for (p = from; p < end; p++) {
            if (in_class(st->cls, cp, fl, p)) {
                *m0 = p;
                *m1 = class_run(st->cls, cp, fl, p, end);
                return true;
            }
            if ((fl[p] & F_S) && p + 1 < end &&
                in_class(st->cls, cp, fl, p + 1)) {
                *m0 = p;
                *m1 = class_run(st->cls, cp, fl, p + 1, end);
                return true;
            }
        }
        return false;
    case ST_DIGITS3:
        for (p = from; p + 3 <= end; p++) {
            if (cp[p] - '0' < 10 && cp[p + 1] - '0' < 10 &&
                cp[p + 2] - '0' < 10) {
                *m0 = p;
                *m1 = p + 3;
                return true;
            }
        }
        return false;
    case ST_TRAIL_SPACE:
        p = end;
        while (p > from && (fl[p - 1] & F_S))
            p--;
        if (p == end)
            return false;
        *m0 = p;
        *m1 = end;
        return true;
    case ST_GPT2:
        break;
    }
    return false;
}

/* Runs |stages| over cps[0..n); the pieces' ends go to s->ends. */
static ks_status
pretokenize_stages(scratch *s, size_t n, const stage *stages,
                   size_t n_stages, size_t *n_words)
{
    const uint32_t *cp = s->cps;
    const uint8_t *fl = s->fl;
    size_t k = 0;

    if (!grow((void **)&s->ends, &s->ends_cap, n, sizeof(uint32_t)) ||
        !grow((void **)&s->ends2, &s->ends2_cap, n, sizeof(uint32_t)))
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
    if (n)
        s->ends[k++] = (uint32_t)n;
    for (size_t i = 0; i < n_stages; i++) {
        const stage *st = &stages[i];
        uint32_t *out = s->ends2;
        size_t nk = 0, start = 0;

        /* every piece ends at a distinct code point: at most n of them */
        for (size_t w = 0; w < k; w++) {
            size_t end = s->ends[w], pos = start, m0, m1;
            if (st->op == ST_GPT2) {
                while (pos < end) {
                    pos = word_gpt2(cp, fl, pos, end);
                    out[nk++] = (uint32_t)pos;
                }
            } else {
                while (pos < end &&
                       stage_find(st, cp, fl, pos, end, &m0, &m1)) {
                    if (m0 > pos)
                        out[nk++] = (uint32_t)m0;
                    out[nk++] = (uint32_t)m1;
                    pos = m1;
                }
                if (pos < end)
                    out[nk++] = (uint32_t)end;
            }
            start = end;
        }
        s->ends2 = s->ends;
        s->ends = out;
        size_t cap = s->ends2_cap;
        s->ends2_cap = s->ends_cap;
        s->ends_cap = cap;
        k = nk;
    }
    *n_words = k;
    return KS_OK;
}

/* Splits cps[0..n) into words; their ends go to s->ends. */
static ks_status
pretokenize(const ks_tokenizer *t, scratch *s, size_t n, size_t *n_words)
{
    const uint32_t *cp = s->cps;
    const uint8_t *fl = s->fl;
    size_t k = 0;

    switch (t->pre) {
    case PRE_DEFAULT:
        return pretokenize_stages(s, n, k_default_stages,
                                  sizeof k_default_stages / sizeof(stage),
                                  n_words);
    case PRE_FALCON:
        return pretokenize_stages(s, n, k_falcon_stages,
                                  sizeof k_falcon_stages / sizeof(stage),
                                  n_words);
    case PRE_DEEPSEEK_LLM:
        return pretokenize_stages(s, n, k_deepseek_llm_stages,
                                  sizeof k_deepseek_llm_stages /
                                  sizeof(stage), n_words);
    case PRE_DEEPSEEK_CODER:
        return pretokenize_stages(s, n, k_deepseek_coder_stages,
                                  sizeof k_deepseek_coder_stages /
                                  sizeof(stage), n_words);
    default:
        break;
    }
    if (!grow((void **)&s->ends, &s->ends_cap, n, sizeof(uint32_t)))
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
    for (size_t seg = 0; seg < n;) {
        /* SmolLM: every \p{N} is a segment of its own, first */
        size_t seg_end = n;
        if (t->pre == PRE_SMOLLM) {
            if (fl[seg] & F_N) {
                s->ends[k++] = (uint32_t)(seg + 1);
                seg++;
                continue;
            }
            seg_end = seg;
            while (seg_end < n && !(fl[seg_end] & F_N))
                seg_end++;
        }
        for (size_t pos = seg; pos < seg_end;) {
            switch (t->pre) {
            case PRE_QWEN2:
                pos = word_llama3(cp, fl, pos, seg_end, 1, F_L);
                break;
            case PRE_QWEN35:
                pos = word_llama3(cp, fl, pos, seg_end, 1, F_L | F_M);
                break;
            case PRE_LLAMA3:
                pos = word_llama3(cp, fl, pos, seg_end, 3, F_L);
                break;
            default:
                pos = word_gpt2(cp, fl, pos, seg_end);
                break;
            }
            s->ends[k++] = (uint32_t)pos;
        }
        seg = seg_end;
    }
    *n_words = k;
    return KS_OK;
}

/* One raw text fragment through byte-level BPE. */
static ks_status
bpe_fragment(const ks_tokenizer *t, scratch *s, const char *txt, size_t len,
             outbuf *o)
{
    ks_status st;
    size_t n = 0, n_words = 0, start = 0;

    if (!grow((void **)&s->cps, &s->cps_cap, len, sizeof(uint32_t)) ||
        !grow((void **)&s->fl, &s->fl_cap, len, 1))
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
    for (size_t i = 0; i < len;) {
        size_t used;
        uint32_t c = ks_utf8_decode((const uint8_t *)txt + i, len - i, &used);
        s->cps[n] = c;
        s->fl[n] = (uint8_t)ks_unicode_flags(c);
        n++;
        i += used;
    }
    if ((st = pretokenize(t, s, n, &n_words)) != KS_OK)
        return st;

    for (size_t w = 0; w < n_words; w++) {
        size_t end = s->ends[w], wn = 0;
        /* each byte of the word's UTF-8 -> one code point -> <= 2 bytes */
        if (!grow((void **)&s->bytes, &s->bytes_cap, 8 * (end - start), 1))
            return ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
        for (size_t i = start; i < end; i++) {
            uint8_t u[4];
            size_t ul = ks_utf8_encode(s->cps[i], u);
            for (size_t k = 0; k < ul; k++)
                wn += ks_utf8_encode(ks_gpt2_byte_to_cp(u[k]), s->bytes + wn);
        }
        start = end;

        if (t->ignore_merges) {
            int32_t id = find_token(t, (const char *)s->bytes, wn);
            if (id >= 0) {
                emit(o, id);
                continue;
            }
        }
        int32_t n_sym;
        if ((st = make_symbols(s, wn, &n_sym)) != KS_OK)
            return st;
        if ((st = merge_symbols(t, s, n_sym)) != KS_OK)
            return st;
        for (int32_t i = 0; n_sym > 0 && i != -1; i = SYM_NEXT(s, i)) {
            const char *p = (const char *)s->bytes + SYM_START(s, i);
            size_t sn = (size_t)SYM_N(s, i);
            int32_t id = find_token(t, p, sn);
            if (id >= 0) {
                emit(o, id);
                continue;
            }
            /* as llama.cpp: single bytes that happen to be tokens */
            for (size_t k = 0; k < sn; k++) {
                id = find_token(t, p + k, 1);
                if (id >= 0)
                    emit(o, id);
            }
        }
    }
    return KS_OK;
}

ks_status
ks_tokenizer_pretokenize(const ks_tokenizer *t, const char *text, size_t len,
                         size_t *ends, size_t cap, size_t *n_out)
{
    ks_status st = KS_OK;
    scratch s;
    size_t *byte_end = NULL, n = 0, n_words = 0;

    memset(&s, 0, sizeof(s));
    if (!t || !n_out || (!text && len))
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: pretokenize needs a "
                        "tokenizer, text and n_out");
    *n_out = 0;
    if (len == 0)
        return KS_OK;
    if (len > KS_TOK_MAX_TEXT)
        return ks_error(KS_ERR_UNSUPPORTED, "tokenizer: text of %zu bytes is "
                        "longer than the %u bytes one call takes", len,
                        (unsigned)KS_TOK_MAX_TEXT);
    if (t->model == KS_TOK_MODEL_SPM) {
        if (ends && cap)
            ends[0] = len;
        *n_out = 1;
        return (ends && cap < 1) ? ks_error(KS_ERR_INVALID_ARG,
                                            "tokenizer: no room for 1 word")
                                 : KS_OK;
    }
    if (!grow((void **)&s.cps, &s.cps_cap, len, sizeof(uint32_t)) ||
        !grow((void **)&s.fl, &s.fl_cap, len, 1) ||
        !(byte_end = malloc(len * sizeof(size_t)))) {
        st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
        goto done;
    }
    for (size_t i = 0; i < len;) {
        size_t used;
        uint32_t c = ks_utf8_decode((const uint8_t *)text + i, len - i, &used);
        s.cps[n] = c;
        s.fl[n] = (uint8_t)ks_unicode_flags(c);
        i += used;
        byte_end[n++] = i;
    }
    if ((st = pretokenize(t, &s, n, &n_words)) != KS_OK)
        goto done;
    for (size_t w = 0; ends && w < n_words && w < cap; w++)
        ends[w] = byte_end[s.ends[w] - 1];
    *n_out = n_words;
    if (ends && cap < n_words)
        st = ks_error(KS_ERR_INVALID_ARG, "tokenizer: room for %zu words, "
                      "the text has %zu", cap, n_words);
done:
    free(byte_end);
    scratch_free(&s);
    return st;
}

/* A piece of the input: raw text [off, off+len) or a special token. */
typedef struct fragment {
    size_t  off, len;
    int32_t tok;       /* -1: raw text */
} fragment;

typedef struct candidate {
    size_t  pos;
    int32_t id;
    uint32_t len;
} candidate;

static int
cmp_candidate(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Splits |text| at special tokens as llama.cpp's tokenizer_st_partition:
 * specials are taken longest first (then by id), each at every leftmost
 * occurrence that does not overlap one already taken. */
static ks_status
partition(const ks_tokenizer *t, const char *text, size_t len,
          bool parse_special, fragment **frags_out, size_t *n_out)
{
    candidate *cand = NULL;
    size_t n_cand = 0, cap_cand = 0, n_frag = 0;
    int32_t *start_tok = NULL;
    uint8_t *covered = NULL;
    fragment *fr = NULL;
    ks_status st = KS_OK;
    /* without parse_special, control and unknown tokens are plain text,
     * even those that are also user-defined */
    unsigned skip = parse_special ? 0 : ATTR_CONTROL | ATTR_UNKNOWN;

    *frags_out = NULL;
    *n_out = 0;
    if (t->n_special) {
        for (size_t p = 0; p < len; p++) {
            int32_t node = 0;
            for (size_t q = p; q < len; q++) {
                int32_t c = t->trie_child[node];
                while (c >= 0 && t->trie_byte[c] != (uint8_t)text[q])
                    c = t->trie_next[c];
                if (c < 0)
                    break;
                node = c;
                int32_t id = t->trie_tok[node];
                if (id >= 0 && !(t->attr[id] & skip)) {
                    if (!grow((void **)&cand, &cap_cand, n_cand + 1,
                              sizeof(candidate))) {
                        st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
                        goto done;
                    }
                    cand[n_cand].pos = p;
                    cand[n_cand].id = id;
                    cand[n_cand].len = t->text_len[id];
                    n_cand++;
                }
            }
        }
    }
    fr = malloc((2 * n_cand + 1) * sizeof(fragment));
    if (!fr) {
        st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
        goto done;
    }
    if (n_cand == 0) {
        if (len) {
            fr[0].off = 0;
            fr[0].len = len;
            fr[0].tok = -1;
            n_frag = 1;
        }
        goto done;
    }
    qsort(cand, n_cand, sizeof(candidate), cmp_candidate);
    covered = calloc(len, 1);
    start_tok = malloc(len * sizeof(int32_t));
    if (!covered || !start_tok) {
        st = ks_error(KS_ERR_NOMEM, "tokenizer: no memory");
        goto done;
    }
    for (size_t i = 0; i < n_cand; i++) {
        const candidate *c = &cand[i];
        bool free_span = true;
        for (size_t k = 0; k < c->len; k++) {
            if (covered[c->pos + k]) {
                free_span = false;
                break;
            }
        }
        if (!free_span)
            continue;
        memset(covered + c->pos, 1, c->len);
        covered[c->pos] = 2;
        start_tok[c->pos] = c->id;
    }
    for (size_t p = 0; p < len;) {
        if (covered[p] == 2) {
            int32_t id = start_tok[p];
            fr[n_frag].off = p;
            fr[n_frag].len = t->text_len[id];
            fr[n_frag].tok = id;
            n_frag++;
            p += t->text_len[id];
            continue;
        }
        size_t q = p;
        while (q < len && !covered[q])
            q++;
        fr[n_frag].off = p;
        fr[n_frag].len = q - p;
        fr[n_frag].tok = -1;
        n_frag++;
        p = q;
    }
done:
    free(cand);
    free(covered);
    free(start_tok);
    if (st != KS_OK) {
        free(fr);
        return st;
    }
    *frags_out = fr;
    *n_out = n_frag;
    return KS_OK;
}

ks_status
ks_tokenizer_encode(const ks_tokenizer *t, const char *text, size_t len,
                    bool add_special, bool parse_special, int32_t *out,
                    size_t cap, size_t *n_out)
{
    ks_status st;
    outbuf o = { out, out ? cap : 0, 0 };
    scratch s;
    fragment *fr = NULL;
    size_t n_frag = 0;

    memset(&s, 0, sizeof(s));
    if (n_out)
        *n_out = 0;
    if (!t || !n_out || (!text && len))
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: encode needs a "
                        "tokenizer, text and n_out");
    if (len > KS_TOK_MAX_TEXT)
        return ks_error(KS_ERR_UNSUPPORTED, "tokenizer: text of %zu bytes is "
                        "longer than the %u bytes one call takes", len,
                        (unsigned)KS_TOK_MAX_TEXT);
    if ((st = partition(t, text, len, parse_special, &fr, &n_frag)) != KS_OK)
        return st;

    if (add_special && t->add_bos && t->bos >= 0)
        emit(&o, t->bos);
    bool prev_special = true;  /* SPM: a space prefix at the start */
    for (size_t i = 0; i < n_frag; i++) {
        if (fr[i].tok >= 0) {
            emit(&o, fr[i].tok);
            prev_special = true;
            continue;
        }
        if (t->model == KS_TOK_MODEL_SPM) {
            st = spm_fragment(t, &s, text + fr[i].off, fr[i].len,
                              t->add_space_prefix && prev_special, &o);
            prev_special = false;
        } else {
            st = bpe_fragment(t, &s, text + fr[i].off, fr[i].len, &o);
        }
        if (st != KS_OK)
            goto done;
    }
    if (add_special && t->add_eos && t->eos >= 0)
        emit(&o, t->eos);

    *n_out = o.n;
    if (out && o.n > cap)
        st = ks_error(KS_ERR_INVALID_ARG, "tokenizer: output holds %zu "
                      "tokens, the text needs %zu", cap, o.n);
done:
    free(fr);
    scratch_free(&s);
    return st;
}

/* ---------------------------------------------------------------------- */
/* decoding                                                                */

static size_t
put(char *buf, size_t cap, size_t at, const void *src, size_t n)
{
    if (buf && at < cap)
        memcpy(buf + at, src, n <= cap - at ? n : cap - at);
    return at + n;
}

/* Writes as much of the piece of |id| as fits in buf[0..cap) (buf may be
 * NULL) and returns its full length. */
static size_t
piece(const ks_tokenizer *t, int32_t id, unsigned flags, char *buf,
      size_t cap)
{
    if (id < 0 || (uint32_t)id >= t->n_tokens)
        return 0;
    unsigned a = t->attr[id] & ATTR_TYPE_MASK;
    const char *s = tok_text(t, id);
    size_t n = t->text_len[id];

    if (a & (ATTR_UNKNOWN | ATTR_CONTROL))
        return (flags & KS_TOK_RENDER_SPECIAL) ? put(buf, cap, 0, s, n) : 0;
    if (a & ATTR_USER_DEFINED)
        return put(buf, cap, 0, s, n);
    if (t->model == KS_TOK_MODEL_SPM) {
        if (a & ATTR_NORMAL) {
            size_t at = 0;
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                    at = put(buf, cap, at, " ", 1);
                    i += 3;
                } else {
                    at = put(buf, cap, at, s + i, 1);
                    i++;
                }
            }
            return at;
        }
    } else if (a & ATTR_NORMAL) {
        size_t at = 0;
        for (size_t i = 0; i < n;) {
            size_t used;
            uint32_t c = ks_utf8_decode((const uint8_t *)s + i, n - i, &used);
            int b = ks_gpt2_cp_to_byte(c);
            if (b >= 0) {
                char ch = (char)b;
                at = put(buf, cap, at, &ch, 1);
            } else {
                at = put(buf, cap, at, s + i, used); /* not byte-level */
            }
            i += used;
        }
        return at;
    }
    if (a & ATTR_BYTE) {
        /* "<0xXX>": the two hex digits at 3..4 */
        unsigned v = 0;
        for (size_t i = 3; i < 5 && i < n; i++) {
            char c = s[i];
            v = v * 16 + (unsigned)(c >= '0' && c <= '9' ? c - '0'
                                   : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : 0);
        }
        char b = (char)v;
        return put(buf, cap, 0, &b, 1);
    }
    return 0;
}

size_t
ks_tokenizer_piece_ex(const ks_tokenizer *t, int32_t id, unsigned flags,
                      char *buf, size_t cap)
{
    if (!t)
        return 0;
    return piece(t, id, flags, buf, cap);
}

size_t
ks_tokenizer_piece(const ks_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    return ks_tokenizer_piece_ex(t, id, 0, buf, cap);
}

/* llama.cpp's clean_spaces passes (llama_vocab::impl::detokenize), in
 * place; returns the new length. */
static size_t
clean_spaces(char *text, size_t total)
{
    /* " ?" " !" " ." " ," -> drop the space */
    size_t total1 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total1; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' ||
                                   x == ','))
            total--;
        text[total++] = x;
    }
    /* " ' " -> "'" */
    size_t total2 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total2; i++) {
        char x = text[i];
        if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' &&
            text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    /* " 's" " 'm" " 're" " 've" -> no space */
    size_t total3 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total3; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
            char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') {
                total--;
            } else if (x1 != 't' && x1 != 'd' && i + 2 < total3) {
                char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                    total--;
            }
        }
        text[total++] = x;
    }
    return total;
}

ks_status
ks_tokenizer_decode_ex(const ks_tokenizer *t, const int32_t *ids, size_t n,
                       unsigned flags, char *buf, size_t cap, size_t *n_out)
{
    size_t total = 0, at = 0;
    char *tmp = NULL;
    bool strip;

    if (n_out)
        *n_out = 0;
    if (!t || !n_out || (!ids && n))
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: decode needs a "
                        "tokenizer, ids and n_out");
    for (size_t i = 0; i < n; i++)
        total += piece(t, ids[i], flags, NULL, 0);
    tmp = malloc(total + 1);
    if (!tmp)
        return ks_error(KS_ERR_NOMEM, "tokenizer: no memory to decode %zu "
                        "bytes", total);
    strip = t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        size_t k = piece(t, ids[i], flags, tmp + at, total - at);
        if (strip && k == 0 && ids[i] == t->bos)
            continue;          /* a hidden leading BOS is not the first */
        if (strip && k && tmp[at] == ' ') {
            memmove(tmp + at, tmp + at + 1, k - 1);
            k--;
        }
        strip = false;
        at += k;
    }
    if (t->clean_spaces)
        at = clean_spaces(tmp, at);
    *n_out = at;
    if (buf) {
        memcpy(buf, tmp, at <= cap ? at : cap);
        if (at < cap)
            buf[at] = '\0';
    }
    free(tmp);
    if (buf && at > cap)
        return ks_error(KS_ERR_INVALID_ARG, "tokenizer: buffer holds %zu "
                        "bytes, the text needs %zu", cap, at);
    return KS_OK;
}

ks_status
ks_tokenizer_decode(const ks_tokenizer *t, const int32_t *ids, size_t n,
                    char *buf, size_t cap, size_t *n_out)
{
    return ks_tokenizer_decode_ex(t, ids, n, 0, buf, cap, n_out);
}

/* ---------------------------------------------------------------------- */
/* queries                                                                 */

int32_t ks_tokenizer_bos(const ks_tokenizer *t) { return t->bos; }
int32_t ks_tokenizer_eos(const ks_tokenizer *t) { return t->eos; }
int32_t ks_tokenizer_unk(const ks_tokenizer *t) { return t->unk; }
bool ks_tokenizer_add_bos(const ks_tokenizer *t) { return t->add_bos; }
bool ks_tokenizer_add_eos(const ks_tokenizer *t) { return t->add_eos; }
uint32_t ks_tokenizer_n_vocab(const ks_tokenizer *t) { return t->n_tokens; }

bool
ks_tokenizer_is_eog(const ks_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_tokens &&
           (t->attr[id] & ATTR_EOG);
}

bool
ks_tokenizer_is_control(const ks_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_tokens &&
           (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN));
}

int32_t
ks_tokenizer_find(const ks_tokenizer *t, const char *text)
{
    if (!text)
        return -1;
    return find_token(t, text, strlen(text));
}

const char *
ks_tokenizer_text(const ks_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_tokens)
        return NULL;
    if (len)
        *len = t->text_len[id];
    return tok_text(t, id);
}

const char *
ks_tokenizer_model_name(const ks_tokenizer *t)
{
    return t->model == KS_TOK_MODEL_SPM ? "llama" : "gpt2";
}

const char *
ks_tokenizer_pre_name(const ks_tokenizer *t)
{
    return t->pre_name;
}
