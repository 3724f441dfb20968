/* libFuzzer target for the tokenizer. Built once: byte-level BPE
 * tokenizers for the gpt-2, smollm, qwen2, llama-bpe, qwen35, falcon,
 * deepseek-llm, deepseek-coder and default pre-tokenizers and
 * two SentencePiece tokenizers with byte fallback (with and without the
 * space prefix), all over small synthetic vocabularies with merges and
 * special tokens. Each input's first byte picks the tokenizer (its low
 * four bits) and the add_special (16) / parse_special (32) flags; the rest
 * is the text. The text is
 * encoded (count, then fill), pre-tokenized, decoded (count, then fill)
 * and every id's piece is read. Checks: counts agree between passes, ids
 * are in range, word ends are increasing and end at the text's end, and
 * decode(encode(x)) == x for well-formed UTF-8 wherever the tokenizer
 * promises it (not across control tokens, not under GPT-2's clean_spaces,
 * not for SentencePiece text that holds a U+2581 itself).
 * Any failed check aborts. Build and run: ci/fuzz.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_BPE = 9, N_SPM = 2, N_TOK = N_BPE + N_SPM };

static ks_tokenizer *g_tok[N_TOK];
static bool g_exact[N_TOK];   /* decode(encode(x)) == x for valid UTF-8 */

#define G_SP "\xC4\xA0"       /* 'Ġ' */
#define LB "\xE2\x96\x81"     /* '▁' */

static void
check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", what);
        abort();
    }
}

static bool
gpt2_self(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

static ks_tokenizer *
make_bpe(const char *pre)
{
    static char bytes[256][4];
    static const char *const extra[] = {
        G_SP "t", "he", G_SP "the", "in", G_SP "in", "ing", "er", "12",
        G_SP G_SP, "\xC4\x8A\xC4\x8A", "\xC3\xA9", "<|im_start|>",
        "<|im_end|>", "<tool>",
    };
    static const char *const merges[] = {
        G_SP " t", "h e", G_SP "t he", "i n", G_SP " in", "in g", "e r",
        "1 2", G_SP " " G_SP, "\xC4\x8A \xC4\x8A", "\xC3 \xA9",
    };
    enum { N_EXTRA = sizeof extra / sizeof extra[0] };
    const char *tokens[256 + N_EXTRA];
    int32_t types[256 + N_EXTRA];
    ks_tok_vocab v;
    ks_tokenizer *t = NULL;

    for (int b = 0, k = 0; b < 256; b++) {
        uint32_t cp = (uint32_t)b;
        if (!gpt2_self(b))
            cp = 0x100u + (uint32_t)k++;
        memset(bytes[b], 0, 4);
        if (cp < 0x80) {
            bytes[b][0] = (char)cp;
        } else {
            bytes[b][0] = (char)(0xC0 | (cp >> 6));
            bytes[b][1] = (char)(0x80 | (cp & 0x3F));
        }
        tokens[b] = bytes[b];
        types[b] = KS_TOK_NORMAL;
    }
    for (int i = 0; i < N_EXTRA; i++) {
        tokens[256 + i] = extra[i];
        types[256 + i] = KS_TOK_NORMAL;
    }
    types[256 + N_EXTRA - 3] = KS_TOK_CONTROL;
    types[256 + N_EXTRA - 1] = KS_TOK_USER_DEFINED;

    memset(&v, 0, sizeof(v));
    v.model = KS_TOK_MODEL_BPE;
    v.pre = pre;
    v.n_tokens = 256 + N_EXTRA;
    v.tokens = tokens;
    v.types = types;
    v.n_merges = sizeof merges / sizeof merges[0];
    v.merges = merges;
    v.bos = 256 + N_EXTRA - 3;
    v.eos = 256 + N_EXTRA - 2;
    v.unk = v.eot = v.eom = v.pad = v.sep = -1;
    check(ks_tokenizer_create_from_vocab(&v, &t) == KS_OK, "create bpe");
    return t;
}

static ks_tokenizer *
make_spm(int8_t space_prefix)
{
    static char bytes[256][7];
    static const char *const extra[] = {
        "<unk>", "<s>", "</s>", LB, LB "t", "he", LB "the", "in", LB "in",
        "ing", "e", "t", "h", "i", "n", "g", LB LB, "\xC3\xA9",
    };
    static const float extra_score[] = {
        0, 0, 0, -1, -2, -3, -1, -4, -2, -3, -5, -5, -5, -5, -5, -5, -6, -7,
    };
    enum { N_EXTRA = sizeof extra / sizeof extra[0] };
    const char *tokens[N_EXTRA + 256];
    float scores[N_EXTRA + 256];
    int32_t types[N_EXTRA + 256];
    ks_tok_vocab v;
    ks_tokenizer *t = NULL;

    for (int i = 0; i < N_EXTRA; i++) {
        tokens[i] = extra[i];
        scores[i] = extra_score[i];
        types[i] = KS_TOK_NORMAL;
    }
    types[0] = KS_TOK_UNKNOWN;
    types[1] = types[2] = KS_TOK_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[N_EXTRA + b] = bytes[b];
        scores[N_EXTRA + b] = 0;
        types[N_EXTRA + b] = KS_TOK_BYTE;
    }
    memset(&v, 0, sizeof(v));
    v.model = KS_TOK_MODEL_SPM;
    v.n_tokens = N_EXTRA + 256;
    v.tokens = tokens;
    v.scores = scores;
    v.types = types;
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    v.eot = v.eom = v.pad = v.sep = -1;
    v.add_space_prefix = space_prefix;
    check(ks_tokenizer_create_from_vocab(&v, &t) == KS_OK, "create spm");
    return t;
}

static void
init(void)
{
    static const char *const pres[N_BPE] = {
        "gpt-2", "smollm", "qwen2", "llama-bpe", "qwen35", "falcon",
        "deepseek-llm", "deepseek-coder", "default",
    };
    /* GPT-2, llama-bpe, falcon and default decode with llama.cpp's
     * clean_spaces */
    static const bool exact[N_BPE] = {
        false, true, true, false, true, false, true, true, false,
    };
    for (int i = 0; i < N_BPE; i++) {
        g_tok[i] = make_bpe(pres[i]);
        g_exact[i] = exact[i];
    }
    g_tok[N_BPE] = make_spm(0);
    g_tok[N_BPE + 1] = make_spm(-1);
    g_exact[N_BPE] = g_exact[N_BPE + 1] = true;
}

/* Strict UTF-8: no overlong forms, surrogates or values past U+10FFFF. */
static bool
valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len > n - i)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += len;
    }
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        init();
        ready = true;
    }
    if (size < 1)
        return 0;

    int which = (data[0] & 15) % N_TOK;
    bool add_special = data[0] & 16;
    bool parse_special = data[0] & 32;
    const ks_tokenizer *t = g_tok[which];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    uint32_t n_vocab = ks_tokenizer_n_vocab(t);

    size_t n = 0, n2 = 0;
    check(ks_tokenizer_encode(t, text, len, add_special, parse_special, NULL,
                              0, &n) == KS_OK, "encode count");
    int32_t *ids = malloc((n + 1) * sizeof(int32_t));
    check(ids != NULL, "malloc");
    check(ks_tokenizer_encode(t, text, len, add_special, parse_special, ids,
                              n, &n2) == KS_OK && n2 == n, "encode fill");
    if (n > 0) {
        size_t n3 = 0;
        check(ks_tokenizer_encode(t, text, len, add_special, parse_special,
                                  ids, n - 1, &n3) == KS_ERR_INVALID_ARG &&
              n3 == n, "encode short buffer");
    }
    for (size_t i = 0; i < n; i++) {
        char piece[64];
        check(ids[i] >= 0 && (uint32_t)ids[i] < n_vocab, "id in range");
        size_t pn = ks_tokenizer_piece(t, ids[i], piece, sizeof piece);
        size_t pr = ks_tokenizer_piece_ex(t, ids[i], KS_TOK_RENDER_SPECIAL,
                                          piece, sizeof piece);
        check(pn <= sizeof piece && pr >= pn, "piece length");
    }

    size_t w = 0, w2 = 0;
    check(ks_tokenizer_pretokenize(t, text, len, NULL, 0, &w) == KS_OK,
          "pretokenize count");
    size_t *ends = malloc((w + 1) * sizeof(size_t));
    check(ends != NULL, "malloc");
    check(ks_tokenizer_pretokenize(t, text, len, ends, w, &w2) == KS_OK &&
          w2 == w, "pretokenize fill");
    for (size_t i = 0; i < w; i++)
        check(ends[i] > (i ? ends[i - 1] : 0) && ends[i] <= len,
              "word ends increase");
    check(len == 0 ? w == 0 : (w > 0 && ends[w - 1] == len), "words cover");
    free(ends);

    size_t dn = 0, dn2 = 0;
    check(ks_tokenizer_decode(t, ids, n, NULL, 0, &dn) == KS_OK,
          "decode count");
    char *out = malloc(dn + 1);
    check(out != NULL, "malloc");
    check(ks_tokenizer_decode(t, ids, n, out, dn + 1, &dn2) == KS_OK &&
          dn2 == dn && out[dn] == '\0', "decode fill");
    /* SentencePiece cannot tell a U+2581 in the text from a space */
    bool has_lb = which >= N_BPE && len >= 3 && memmem(text, len, LB, 3);
    if (g_exact[which] && !parse_special && !has_lb &&
        valid_utf8((const uint8_t *)text, len))
        check(dn == len && memcmp(out, text, len) == 0, "round trip");
    free(out);
    free(ids);
    return 0;
}
