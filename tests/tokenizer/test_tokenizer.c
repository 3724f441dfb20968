/* Tests of the tokenizer (runtime/tokenizer.c).
 *
 * Synthetic vocabularies built in memory check the algorithms without
 * files: SentencePiece merging by score with leftmost ties and byte
 * fallback, byte-level BPE merging by rank, the pre-tokenizers' word
 * boundaries, special-token splitting, flags and count-then-fill.
 *
 * Real vocabularies check token ids against llama.cpp. The expected ids
 * below were produced by llama.cpp's own tokenizer: llama-tokenize from the
 * llama.cpp sources vendored in the PyPI sdist llama-cpp-python 0.3.36
 * (llama.cpp of 2026-10-01, libllama 0.5.0), run as
 *
 *     llama-tokenize -m MODEL --stdin --ids --log-disable --no-escape \
 *         [--no-parse-special] < text
 *
 * which adds BOS when the model asks for it (add_special = add_bos) and
 * parses special tokens unless told not to. MODEL is
 * stories260K-f32.gguf (shared/models/stories260K), and from
 * $KESTREL_MODEL_DIR (default ~/.cache/kestrel/models, filled by
 * ci/fetch-models.sh) SmolLM2-135M-Instruct.Q4_1.gguf and
 * gemma-3-270m-q4_k_m.gguf. Test cases for files that are absent are
 * skipped with a message. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

typedef struct tok_case {
    const char    *text;
    bool           parse_special;
    const int32_t *ids;
    size_t         n_ids;
} tok_case;

#define IDS(...)                                                           \
    (const int32_t[]){ __VA_ARGS__ },                                      \
        sizeof((const int32_t[]){ __VA_ARGS__ }) / sizeof(int32_t)

/* ---------------------------------------------------------------------- */
/* expected ids (llama-tokenize, see the top of the file)                   */

static const tok_case k_stories[] = {
    /* Once upon a time, there was a little girl named Lily. */
    { "Once upon a time, there was a little girl named Lily.", true,
      IDS(1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421,
          395, 317, 426) },
    /* The quick brown fox jumps over the lazy dog. */
    { "The quick brown fox jumps over the lazy dog.", true,
      IDS(1, 291, 410, 456, 425, 417, 340, 268, 420, 327, 416, 272, 414,
          444, 410, 449, 425, 423, 427, 419, 334, 330, 265, 278, 412, 451,
          422, 400, 428, 426) },
    /*   leading, trailing and   multiple spaces   */
    { "  leading, trailing and   multiple spaces  ", true,
      IDS(1, 410, 410, 278, 411, 380, 299, 432, 259, 420, 412, 290, 299,
          269, 410, 410, 284, 425, 421, 413, 417, 427, 305, 262, 427, 412,
          331, 419, 410, 410) },
    /* line one\nline two\n\n\tindented
\n */
    { "line one\nline two\n\n\tindented\r\n", true,
      IDS(1, 278, 271, 411, 353, 411, 13, 421, 271, 411, 259, 424, 414, 13,
          13, 12, 417, 264, 377, 266, 16, 13) },
    /* 12345 and 3.14 and 1,000,000 */
    { "12345 and 3.14 and 1,000,000", true,
      IDS(1, 410, 475, 479, 472, 484, 480, 269, 410, 472, 426, 475, 484,
          269, 410, 475, 432, 477, 477, 477, 432, 477, 477, 477) },
    /* I'm sure they don't; we'll see, you're RIGHT'S */
    { "I'm sure they don't; we'll see, you're RIGHT'S", true,
      IDS(1, 359, 439, 423, 262, 425, 276, 366, 279, 289, 439, 413, 474,
          382, 439, 306, 262, 411, 411, 432, 364, 439, 276, 410, 461, 442,
          463, 440, 434, 439, 437) },
    /* Café, naïve, déjà vu; Größe, Übermaß, Straße */
    { "Caf\xC3\xA9, na\xC3\xAFve, d\xC3\xA9j\xC3\xA0 vu; Gr\xC3\xB6"
      "\xC3\x9F" "e, \xC3\x9C" "berma\xC3\x9F, Stra\xC3\x9F" "e", true,
      IDS(1, 410, 457, 412, 431, 485, 432, 297, 412, 198, 178, 360, 432,
          279, 485, 449, 198, 163, 410, 435, 425, 474, 410, 463, 420, 198,
          185, 198, 162, 411, 432, 410, 198, 159, 430, 285, 423, 412, 198,
          162, 432, 301, 413, 420, 412, 198, 162, 411) },
    /* 你好，世界！我们今天学习中文。 */
    { "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C"
      "\xEF\xBC\x81\xE6\x88\x91\xE4\xBB\xAC\xE4\xBB\x8A\xE5\xA4\xA9"
      "\xE5\xAD\xA6\xE4\xB9\xA0\xE4\xB8\xAD\xE6\x96\x87\xE3\x80\x82", true,
      IDS(1, 410, 231, 192, 163, 232, 168, 192, 242, 191, 143, 231, 187,
          153, 234, 152, 143, 242, 191, 132, 233, 139, 148, 231, 190, 175,
          231, 190, 141, 232, 167, 172, 232, 176, 169, 231, 188, 163, 231,
          187, 176, 233, 153, 138, 230, 131, 133) },
    /* 👨‍👩‍👧‍👦 family and 🇫🇷 flag 😀! */
    { "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
      "\xF0\x9F\x91\xA7\xE2\x80\x8D\xF0\x9F\x91\xA6 family and "
      "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 flag \xF0\x9F\x98\x80!", true,
      IDS(1, 410, 243, 162, 148, 171, 229, 131, 144, 243, 162, 148, 172,
          229, 131, 144, 243, 162, 148, 170, 229, 131, 144, 243, 162, 148,
          169, 272, 314, 310, 269, 410, 243, 162, 138, 174, 243, 162, 138,
          186, 272, 421, 412, 428, 410, 243, 162, 155, 131, 443) },
    /* <s>Lily</s> and <unk> */
    { "<s>Lily</s> and <unk>", true,
      IDS(1, 1, 317, 2, 410, 269, 410, 0) },
    /* <s>Lily</s> (no parse_special) */
    { "<s>Lily</s>", false,
      IDS(1, 410, 504, 419, 505, 438, 310, 504, 492, 419, 505) },
    /* bad ��( utf8 � */
    { "bad \xFF\xC3( utf8 \xE2\x82", true,
      IDS(1, 268, 380, 410, 258, 198, 43, 229, 153, 132, 323, 431, 487,
          410, 229, 133) },
};

static const tok_case k_smollm[] = {
    /* The quick brown fox jumps over the lazy dog. */
    { "The quick brown fox jumps over the lazy dog.", true,
      IDS(504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30) },
    /*   leading, trailing and   multiple spaces   */
    { "  leading, trailing and   multiple spaces  ", true,
      IDS(216, 2899, 28, 35079, 284, 256, 2701, 5600, 256) },
    /* line one\nline two\n\n\tindented
\n */
    { "line one\nline two\n\n\tindented\r\n", true,
      IDS(1311, 582, 198, 1311, 827, 1116, 197, 526, 6574, 2738) },
    /* 12345 and 3.14 and 1,000,000 */
    { "12345 and 3.14 and 1,000,000", true,
      IDS(33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 284, 216, 33, 28,
          32, 32, 32, 28, 32, 32, 32) },
    /* I'm sure they don't; we'll see, you're RIGHT'S */
    { "I'm sure they don't; we'll see, you're RIGHT'S", true,
      IDS(57, 5248, 2090, 502, 1326, 982, 43, 392, 3060, 963, 28, 346,
          2316, 428, 20128, 23, 67) },
    /* Hello, world! (Really?) [yes] {no} a-b_c @#$% ~~ */
    { "Hello, world! (Really?) [yes] {no} a-b_c @#$% ~~", true,
      IDS(19556, 28, 905, 17, 365, 3733, 682, 14199, 933, 10407, 77, 1662,
          4607, 109, 253, 29, 82, 79, 83, 3394, 19, 20, 21, 216, 9493) },
    /* int main(void) {\n    return 0; // done\n}\n */
    { "int main(void) {\n    return 0; // done\n}\n", true,
      IDS(591, 1085, 24, 32439, 25, 1662, 472, 1003, 216, 32, 43, 13241,
          2294, 198, 109, 198) },
    /* Café, naïve, déjà vu; Größe, Übermaß, Straße */
    { "Caf\xC3\xA9, na\xC3\xAFve, d\xC3\xA9j\xC3\xA0 vu; Gr\xC3\xB6"
      "\xC3\x9F" "e, \xC3\x9C" "berma\xC3\x9F, Stra\xC3\x9F" "e", true,
      IDS(51, 1939, 2756, 28, 15486, 46494, 28, 32564, 90, 16739, 386, 101,
          43, 9171, 7466, 34878, 85, 28, 5549, 246, 593, 2432, 34878, 28,
          19144, 34878, 85) },
    /* 你好，世界！我们今天学习中文。 */
    { "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C"
      "\xEF\xBC\x81\xE6\x88\x91\xE4\xBB\xAC\xE4\xBB\x8A\xE5\xA4\xA9"
      "\xE5\xAD\xA6\xE4\xB9\xA0\xE4\xB8\xAD\xE6\x96\x87\xE3\x80\x82", true,
      IDS(18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230, 8083,
          219, 19805, 235, 15076, 122, 15076, 228, 18614, 119, 18753, 116,
          27948, 250, 28589, 29184, 19076) },
    /* 日本語のテキスト、カタカナとひらがな。 */
    { "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86"
      "\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88\xE3\x80\x81\xE3\x82\xAB"
      "\xE3\x82\xBF\xE3\x82\xAB\xE3\x83\x8A\xE3\x81\xA8\xE3\x81\xB2"
      "\xE3\x82\x89\xE3\x81\x8C\xE3\x81\xAA\xE3\x80\x82", true,
      IDS(23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251,
          10391, 134, 11100, 226, 29917, 10391, 121, 10391, 140, 10391,
          121, 11100, 228, 7365, 118, 7365, 127, 10391, 227, 7365, 230,
          7365, 120, 19076) },
    /* Привет, мир! Как дела? */
    { "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC"
      "\xD0\xB8\xD1\x80! \xD0\x9A\xD0\xB0\xD0\xBA \xD0\xB4\xD0\xB5"
      "\xD0\xBB\xD0\xB0?", true,
      IDS(155, 249, 46879, 16464, 32547, 28, 41337, 7872, 9175, 17, 5470,
          244, 6511, 13760, 33427, 42292, 6511, 47) },
    /* 👨‍👩‍👧‍👦 family and 🇫🇷 flag 😀! */
    { "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
      "\xF0\x9F\x91\xA7\xE2\x80\x8D\xF0\x9F\x91\xA6 family and "
      "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 flag \xF0\x9F\x98\x80!", true,
      IDS(10813, 235, 118, 321, 231, 10813, 235, 119, 321, 231, 10813, 235,
          117, 321, 231, 10813, 235, 116, 1564, 284, 15107, 225, 121,
          10813, 225, 132, 7048, 40303, 218, 17) },
    /* <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n */
    { "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", true,
      IDS(1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198) },
    /* <|im_start|>user\nHi<|im_end|>\n (no parse_special) */
    { "<|im_start|>user\nHi<|im_end|>\n", false,
      IDS(44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306,
          79, 486, 108, 46, 198) },
};

static const tok_case k_gemma[] = {
    /* The quick brown fox jumps over the lazy dog. */
    { "The quick brown fox jumps over the lazy dog.", true,
      IDS(2, 818, 3823, 8864, 37423, 38167, 1024, 506, 31770, 4799, 236761) },
    /*   leading, trailing and   multiple spaces   */
    { "  leading, trailing and   multiple spaces  ", true,
      IDS(2, 138, 26016, 236764, 45330, 532, 139, 43819, 9952, 138) },
    /* line one\nline two\n\n\tindented
\n */
    { "line one\nline two\n\n\tindented\r\n", true,
      IDS(2, 1257, 886, 107, 1257, 1156, 108, 255968, 724, 16764, 251, 107) },
    /* 12345 and 3.14 and 1,000,000 */
    { "12345 and 3.14 and 1,000,000", true,
      IDS(2, 236770, 236778, 236800, 236812, 236810, 532, 236743, 236800,
          236761, 236770, 236812, 532, 236743, 236770, 236764, 236771,
          236771, 236771, 236764, 236771, 236771, 236771) },
    /* I'm sure they don't; we'll see, you're RIGHT'S */
    { "I'm sure they don't; we'll see, you're RIGHT'S", true,
      IDS(2, 236777, 236789, 236757, 2889, 901, 1537, 236789, 236745,
          236793, 692, 236789, 859, 1460, 236764, 611, 236789, 500, 40350,
          236789, 236773) },
    /* Hello, world! (Really?) [yes] {no} a-b_c @#$% ~~ */
    { "Hello, world! (Really?) [yes] {no} a-b_c @#$% ~~", true,
      IDS(2, 9259, 236764, 1902, 236888, 568, 67821, 17103, 870, 4443,
          236842, 642, 1904, 236783, 496, 236772, 236763, 236779, 236755,
          1392, 190494, 137443) },
    /* int main(void) {\n    return 0; // done\n}\n */
    { "int main(void) {\n    return 0; // done\n}\n", true,
      IDS(2, 720, 1689, 236769, 4117, 236768, 642, 107, 140, 2060, 236743,
          236771, 236793, 973, 3028, 107, 236783, 107) },
    /* Café, naïve, déjà vu; Größe, Übermaß, Straße */
    { "Caf\xC3\xA9, na\xC3\xAFve, d\xC3\xA9j\xC3\xA0 vu; Gr\xC3\xB6"
      "\xC3\x9F" "e, \xC3\x9C" "berma\xC3\x9F, Stra\xC3\x9F" "e", true,
      IDS(2, 160319, 236859, 236764, 120362, 236764, 29234, 11042, 236793,
          112880, 236764, 30668, 126987, 236764, 80176) },
    /* 你好，世界！我们今天学习中文。 */
    { "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C"
      "\xEF\xBC\x81\xE6\x88\x91\xE4\xBB\xAC\xE4\xBB\x8A\xE5\xA4\xA9"
      "\xE5\xAD\xA6\xE4\xB9\xA0\xE4\xB8\xAD\xE6\x96\x87\xE3\x80\x82", true,
      IDS(2, 144626, 236900, 12811, 237354, 6932, 22601, 23486, 55041,
          236924) },
    /* 日本語のテキスト、カタカナとひらがな。 */
    { "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86"
      "\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88\xE3\x80\x81\xE3\x82\xAB"
      "\xE3\x82\xBF\xE3\x82\xAB\xE3\x83\x8A\xE3\x81\xA8\xE3\x81\xB2"
      "\xE3\x82\x89\xE3\x81\x8C\xE3\x81\xAA\xE3\x80\x82", true,
      IDS(2, 94951, 236945, 95830, 236951, 131906, 123729, 237032, 239043,
          155159, 237050, 236924) },
    /* Привет, мир! Как дела? */
    { "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC"
      "\xD0\xB8\xD1\x80! \xD0\x9A\xD0\xB0\xD0\xBA \xD0\xB4\xD0\xB5"
      "\xD0\xBB\xD0\xB0?", true,
      IDS(2, 116130, 236764, 58562, 236888, 30478, 22633, 236881) },
    /* 👨‍👩‍👧‍👦 family and 🇫🇷 flag 😀! */
    { "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
      "\xF0\x9F\x91\xA7\xE2\x80\x8D\xF0\x9F\x91\xA6 family and "
      "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 flag \xF0\x9F\x98\x80!", true,
      IDS(2, 243874, 237243, 243767, 237243, 244814, 237243, 244990, 2523,
          532, 236743, 246598, 242644, 8134, 163543, 236888) },
    /* <start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n */
    { "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", true,
      IDS(2, 105, 2364, 107, 10979, 106, 107, 105, 4368, 107) },
    /* <start_of_turn>user\nHi<end_of_turn>\n (no parse_special) */
    { "<start_of_turn>user\nHi<end_of_turn>\n", false,
      IDS(2, 236820, 3041, 236779, 1340, 236779, 887, 236813, 2364, 107,
          10979, 236820, 643, 236779, 1340, 236779, 887, 236813, 107) },
    /* a\n\n\nb    c <table><tr> */
    { "a\n\n\nb    c <table><tr>", true,
      IDS(2, 236746, 109, 236763, 140, 236755, 236743, 168, 173) },
};

/* ---------------------------------------------------------------------- */
/* helpers                                                                 */

/* encode with the count-then-fill protocol; returns a malloc'd array */
static int32_t *
encode_all(const ks_tokenizer *t, const char *text, size_t len,
           bool add_special, bool parse_special, size_t *n)
{
    size_t need = 0, got = 0;

    ck_assert_int_eq(ks_tokenizer_encode(t, text, len, add_special,
                                         parse_special, NULL, 0, &need),
                     KS_OK);
    int32_t *ids = malloc((need + 1) * sizeof(int32_t));
    ck_assert_ptr_nonnull(ids);
    ck_assert_int_eq(ks_tokenizer_encode(t, text, len, add_special,
                                         parse_special, ids, need, &got),
                     KS_OK);
    ck_assert_uint_eq(got, need);
    *n = got;
    return ids;
}

static char *
decode_all(const ks_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t need = 0, got = 0;

    ck_assert_int_eq(ks_tokenizer_decode(t, ids, n, NULL, 0, &need), KS_OK);
    char *buf = malloc(need + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(ks_tokenizer_decode(t, ids, n, buf, need + 1, &got),
                     KS_OK);
    ck_assert_uint_eq(got, need);
    ck_assert_int_eq(buf[got], '\0');
    *len = got;
    return buf;
}

static void
print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "%s [", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, i ? ", %d" : "%d", ids[i]);
    fprintf(stderr, "]\n");
}

static void
expect_ids(const ks_tokenizer *t, const char *text, bool add_special,
           bool parse_special, const int32_t *want, size_t n_want)
{
    size_t n;
    int32_t *ids = encode_all(t, text, strlen(text), add_special,
                              parse_special, &n);
    bool same = n == n_want && memcmp(ids, want, n * sizeof(int32_t)) == 0;
    if (!same) {
        fprintf(stderr, "text: \"%s\"\n", text);
        print_ids("  want", want, n_want);
        print_ids("  got ", ids, n);
    }
    free(ids);
    ck_assert_msg(same, "token ids differ for \"%s\"", text);
}

static void
expect_roundtrip(const ks_tokenizer *t, const char *text, size_t len)
{
    size_t n, out_len;
    int32_t *ids = encode_all(t, text, len, true, false, &n);
    char *back = decode_all(t, ids, n, &out_len);
    bool same = out_len == len && memcmp(back, text, len) == 0;
    if (!same)
        fprintf(stderr, "round trip: \"%.*s\" -> \"%s\"\n", (int)len, text,
                back);
    free(ids);
    free(back);
    ck_assert_msg(same, "decode(encode(x)) != x for \"%.*s\"", (int)len,
                  text);
}

static void
expect_words(const ks_tokenizer *t, const char *text, const size_t *want,
             size_t n_want)
{
    size_t ends[64], n = 0;
    ck_assert_int_eq(ks_tokenizer_pretokenize(t, text, strlen(text), ends, 64,
                                              &n), KS_OK);
    bool same = n == n_want && memcmp(ends, want, n * sizeof(size_t)) == 0;
    if (!same) {
        fprintf(stderr, "words of \"%s\" (pre %s):", text,
                ks_tokenizer_pre_name(t));
        size_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            fprintf(stderr, " [%.*s]", (int)(ends[i] - prev), text + prev);
            prev = ends[i];
        }
        fprintf(stderr, "\n");
    }
    ck_assert_msg(same, "pre-tokenizer %s cut \"%s\" wrongly",
                  ks_tokenizer_pre_name(t), text);
}

/* ---------------------------------------------------------------------- */
/* synthetic byte-level BPE                                                */

#define G_SP "\xC4\xA0" /* U+0120 'Ġ', the byte-level form of a space */

/* ids 0..255: the byte-level character of byte i, so that id == byte;
 * then merged tokens and specials. */
enum {
    B_GT = 256,   /* "Ġt" */
    B_HE,         /* "he" */
    B_GTHE,       /* "Ġthe" */
    B_CA,         /* "ca" */
    B_CAT,        /* "cat" */
    B_GCAT,       /* "Ġcat" */
    B_12,         /* "12" */
    B_AA,         /* "aa" */
    B_IM_START,   /* "<|im_start|>" control */
    B_IM_END,     /* "<|im_end|>" normal in the file; llama.cpp makes it
                   * control and end-of-generation */
    B_TOOL,       /* "<tool>" user-defined */
    B_N
};

static char g_bpe_bytes[256][4];

/* The synthetic BPE vocabulary with pre-tokenizer |pre|; |fallback|: an
 * unknown |pre| takes the GPT-2 rules. */
static ks_status
try_make_bpe(const char *pre, bool fallback, ks_tokenizer **t)
{
    static const char *const extra[] = {
        G_SP "t", "he", G_SP "the", "ca", "cat", G_SP "cat", "12", "aa",
        "<|im_start|>", "<|im_end|>", "<tool>",
    };
    static const char *const merges[] = {
        G_SP " t", "h e", G_SP "t he", "c a", "ca t", G_SP " cat", "1 2",
        "a a", "no-space-merge",
    };
    const char *tokens[B_N];
    int32_t types[B_N];
    ks_tok_vocab v;

    for (int b = 0; b < 256; b++) {
        uint32_t cp = (uint32_t)b;
        /* GPT-2's table: printable bytes stand for themselves, the others
         * for U+0100.. in byte order */
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
              (b >= 0xAE))) {
            int k = 0;
            for (int c = 0; c < b; c++)
                if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) ||
                      (c >= 0xAE)))
                    k++;
            cp = 0x100u + (uint32_t)k;
        }
        char *o = g_bpe_bytes[b];
        memset(o, 0, 4);
        if (cp < 0x80) {
            o[0] = (char)cp;
        } else {
            o[0] = (char)(0xC0 | (cp >> 6));
            o[1] = (char)(0x80 | (cp & 0x3F));
        }
        tokens[b] = o;
        types[b] = KS_TOK_NORMAL;
    }
    for (int i = 256; i < B_N; i++) {
        tokens[i] = extra[i - 256];
        types[i] = KS_TOK_NORMAL;
    }
    types[B_IM_START] = KS_TOK_CONTROL;
    types[B_TOOL] = KS_TOK_USER_DEFINED;

    memset(&v, 0, sizeof(v));
    v.model = KS_TOK_MODEL_BPE;
    v.pre = pre;
    v.n_tokens = B_N;
    v.tokens = tokens;
    v.types = types;
    v.n_merges = sizeof merges / sizeof merges[0];
    v.merges = merges;
    v.bos = B_IM_START;
    v.eos = -1;
    v.unk = v.eot = v.eom = v.pad = v.sep = -1;
    v.pre_fallback_gpt2 = fallback;
    return ks_tokenizer_create_from_vocab(&v, t);
}

static ks_tokenizer *
make_bpe(const char *pre)
{
    ks_tokenizer *t = NULL;

    ck_assert_int_eq(try_make_bpe(pre, false, &t), KS_OK);
    ck_assert_ptr_nonnull(t);
    return t;
}

START_TEST(bpe_merges_by_rank)
{
    ks_tokenizer *t = make_bpe("gpt-2");

    ck_assert_str_eq(ks_tokenizer_model_name(t), "gpt2");
    ck_assert_uint_eq(ks_tokenizer_n_vocab(t), B_N);
    expect_ids(t, " the cat", false, false, IDS(B_GTHE, B_GCAT));
    /* "the" has no "t he" merge: t + he */
    expect_ids(t, "the cat", false, false, IDS('t', B_HE, B_GCAT));
    /* equal ranks: the leftmost pair merges first */
    expect_ids(t, "aaa", false, false, IDS(B_AA, 'a'));
    expect_ids(t, "aaaa", false, false, IDS(B_AA, B_AA));
    /* a newline is the byte-level character U+010A */
    expect_ids(t, "a\n", false, false, IDS('a', '\n'));
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_pre_gpt2)
{
    ks_tokenizer *t = make_bpe("gpt-2");
    const char *s = "Hello world  foo's 123\n\nbar";

    ck_assert_str_eq(ks_tokenizer_pre_name(t), "gpt-2");
    /* Hello| world| | foo|'s| 123|\n|\n|bar */
    expect_words(t, s, (size_t[]){ 5, 11, 12, 16, 18, 22, 23, 24, 27 }, 9);
    /* contractions are case sensitive: IT|'|S */
    expect_words(t, "IT'S it's", (size_t[]){ 2, 3, 4, 7, 9 }, 5);
    /* a space run before the end stays whole: a|   */
    expect_words(t, "a   ", (size_t[]){ 1, 4 }, 2);
    /* letters, numbers and others: ab|12| ,,| x */
    expect_words(t, "ab12 ,, x", (size_t[]){ 2, 4, 7, 9 }, 4);
    expect_ids(t, "12", false, false, IDS(B_12));
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_pre_smollm)
{
    ks_tokenizer *t = make_bpe("smollm");
    const char *s = "Hello world  foo's 123\n\nbar";

    ck_assert_str_eq(ks_tokenizer_pre_name(t), "smollm");
    /* digits first split one by one, then GPT-2 rules in between:
     * Hello| world| | foo|'s| |1|2|3|\n|\n|bar */
    expect_words(t, s, (size_t[]){ 5, 11, 12, 16, 18, 19, 20, 21, 22, 23, 24,
                                   27 }, 12);
    /* so "12" can never merge */
    expect_ids(t, "12", false, false, IDS('1', '2'));
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_pre_qwen2_llama3)
{
    ks_tokenizer *q = make_bpe("qwen2");
    ks_tokenizer *d = make_bpe("deepseek-r1-qwen");
    ks_tokenizer *l = make_bpe("llama-bpe");
    const char *s = "Hello world  foo's 123\n\nbar";

    ck_assert_str_eq(ks_tokenizer_pre_name(q), "qwen2");
    ck_assert_str_eq(ks_tokenizer_pre_name(d), "deepseek-r1-qwen");
    /* Hello| world| | foo|'s| |1|2|3|\n\n|bar */
    expect_words(q, s, (size_t[]){ 5, 11, 12, 16, 18, 19, 20, 21, 22, 24,
                                   27 }, 11);
    expect_words(d, s, (size_t[]){ 5, 11, 12, 16, 18, 19, 20, 21, 22, 24,
                                   27 }, 11);
    /* \p{N}{1,3}: 123 stays whole; 12345 is 123|45 */
    expect_words(l, s, (size_t[]){ 5, 11, 12, 16, 18, 19, 22, 24, 27 }, 9);
    expect_words(l, "12345", (size_t[]){ 3, 5 }, 2);
    /* case-insensitive contractions: IT|'S| it|'s */
    expect_words(q, "IT'S it's", (size_t[]){ 2, 4, 7, 9 }, 4);
    /* one non-letter may lead a word: (hello|\tworld */
    expect_words(q, "(hello\tworld", (size_t[]){ 6, 12 }, 2);
    /* punctuation keeps trailing newlines: ?!\n\n|x */
    expect_words(q, "?!\n\nx", (size_t[]){ 4, 5 }, 2);
    /* \s*[\r\n]+ then \s+(?!\S): "  \n  " | " " | "x"... */
    expect_words(q, "a  \n   x", (size_t[]){ 1, 4, 6, 8 }, 4);
    /* llama-bpe adds BOS by default, qwen2 does not */
    ck_assert(ks_tokenizer_add_bos(l));
    ck_assert(!ks_tokenizer_add_bos(q));
    ks_tokenizer_destroy(q);
    ks_tokenizer_destroy(d);
    ks_tokenizer_destroy(l);
}
END_TEST

/* The pre-tokenizers made of several regexes, and qwen35's marks. Words
 * worked out by hand from llama.cpp's regexes (llama-vocab.cpp), each
 * splitting the pieces the one before left. */
START_TEST(bpe_pre_multi_regex)
{
    ks_tokenizer *t;

    /* falcon: [\p{P}$+<=>^~|`]+, then GPT-2, then [0-9]{3} */
    t = make_bpe("falcon");
    expect_words(t, "abc1234+=x", (size_t[]){ 3, 6, 7, 9, 10 }, 5);
    expect_words(t, "a `b", (size_t[]){ 1, 2, 3, 4 }, 4);
    ks_tokenizer_destroy(t);
    /* default: as falcon without `, and \p{N}+ before [0-9]{3} */
    t = make_bpe("default");
    expect_words(t, "a$1234", (size_t[]){ 1, 2, 5, 6 }, 4);
    expect_words(t, "a `b", (size_t[]){ 1, 3, 4 }, 3);
    ks_tokenizer_destroy(t);
    /* deepseek-coder: [\r\n], \s?\p{L}+, \s?\p{P}+, CJK+, \p{N} */
    t = make_bpe("deepseek-coder");
    expect_words(t, "a12\nb", (size_t[]){ 1, 2, 3, 4, 5 }, 5);
    expect_words(t, "x, y", (size_t[]){ 1, 2, 4 }, 3);
    ks_tokenizer_destroy(t);
    /* deepseek-llm: its letter ranges hold é, but its next class
     * (ASCII !-/ :-~ and some CJK punctuation) does not, so "Héllo" is cut
     * there; trailing white space is a piece of its own */
    t = make_bpe("deepseek-llm");
    expect_words(t, "H\xC3\xA9llo  ", (size_t[]){ 1, 3, 6, 8 }, 4);
    expect_words(t, "ab12", (size_t[]){ 2, 4 }, 2);
    ks_tokenizer_destroy(t);
    /* qwen35: a combining mark (U+0301) stays in the letter run; qwen2
     * starts a new word at it */
    t = make_bpe("qwen35");
    expect_words(t, "a\xCC\x81" "b c", (size_t[]){ 4, 6 }, 2);
    ks_tokenizer_destroy(t);
    t = make_bpe("qwen2");
    expect_words(t, "a\xCC\x81" "b c", (size_t[]){ 1, 4, 6 }, 3);
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_unknown_pre_refused)
{
    ks_tokenizer *t = NULL;

    /* as llama.cpp: an unknown pre-tokenizer is an error naming it */
    ck_assert_int_eq(try_make_bpe("no-such-pre", false, &t),
                     KS_ERR_UNSUPPORTED);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'no-such-pre'"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "pre_fallback_gpt2"));
    /* unless the caller asks for the GPT-2 rules */
    ck_assert_int_eq(try_make_bpe("no-such-pre", true, &t), KS_OK);
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "gpt-2");
    expect_words(t, "a  b", (size_t[]){ 1, 2, 4 }, 3);
    ks_tokenizer_destroy(t);
    /* NULL (a hand-built vocabulary without one) keeps the GPT-2 rules */
    t = make_bpe(NULL);
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "gpt-2");
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_unicode_classes)
{
    ks_tokenizer *t = make_bpe("gpt-2");

    /* letters of other scripts (é, Ж, 中), numbers (², Arabic-Indic),
     * non-ASCII white space (U+3000) */
    expect_words(t, "caf\xC3\xA9 \xD0\x96\xD0\x96 \xE4\xB8\xAD",
                 (size_t[]){ 5, 10, 14 }, 3);
    expect_words(t, "x\xC2\xB2 \xD9\xA1\xD9\xA2", (size_t[]){ 1, 3, 8 }, 3);
    /* the optional leading space is ASCII only: a|U+3000|U+3000|z */
    expect_words(t, "a\xE3\x80\x80\xE3\x80\x80z", (size_t[]){ 1, 4, 7, 8 }, 4);
    /* a combining mark is not a letter: e|\u0301 */
    expect_words(t, "e\xCC\x81", (size_t[]){ 1, 3 }, 2);
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_specials)
{
    ks_tokenizer *t = make_bpe("gpt-2");
    const char *chat = "<|im_start|>x<|im_end|>";
    size_t n, len;

    expect_ids(t, chat, false, true, IDS(B_IM_START, 'x', B_IM_END));
    /* without parse_special the control texts are plain text */
    int32_t *ids = encode_all(t, chat, strlen(chat), false, false, &n);
    ck_assert_uint_gt(n, 3);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_lt(ids[i], 256);
    char *back = decode_all(t, ids, n, &len);
    ck_assert_str_eq(back, chat);
    free(ids);
    free(back);
    /* user-defined tokens are split out either way */
    expect_ids(t, "a<tool>b", false, false, IDS('a', B_TOOL, 'b'));
    expect_ids(t, "a<tool>b", false, true, IDS('a', B_TOOL, 'b'));
    /* <|im_end|> became control and ends generation */
    ck_assert(ks_tokenizer_is_eog(t, B_IM_END));
    ck_assert(ks_tokenizer_is_control(t, B_IM_END));
    ck_assert(!ks_tokenizer_is_eog(t, B_IM_START));
    ck_assert(!ks_tokenizer_is_eog(t, 'a'));
    ck_assert(!ks_tokenizer_is_eog(t, -1));
    ck_assert(!ks_tokenizer_is_eog(t, B_N));
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_pieces_and_decode)
{
    ks_tokenizer *t = make_bpe("smollm");
    char buf[64];
    static const int32_t ids[] = { B_IM_START, B_GTHE, B_GCAT, B_TOOL,
                                   '\n', B_IM_END };
    size_t len;

    ck_assert_uint_eq(ks_tokenizer_piece(t, B_GTHE, buf, sizeof buf), 4);
    ck_assert(memcmp(buf, " the", 4) == 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, '\n', buf, sizeof buf), 1);
    ck_assert_int_eq(buf[0], '\n');
    /* control tokens are hidden unless asked for */
    ck_assert_uint_eq(ks_tokenizer_piece(t, B_IM_START, buf, sizeof buf), 0);
    ck_assert_uint_eq(ks_tokenizer_piece_ex(t, B_IM_START,
                                            KS_TOK_RENDER_SPECIAL, buf,
                                            sizeof buf), 12);
    ck_assert(memcmp(buf, "<|im_start|>", 12) == 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, B_TOOL, buf, sizeof buf), 6);
    ck_assert_uint_eq(ks_tokenizer_piece(t, -5, buf, sizeof buf), 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, B_N, buf, sizeof buf), 0);
    /* too small: the full length, the first bytes written */
    memset(buf, '#', 8);
    ck_assert_uint_eq(ks_tokenizer_piece(t, B_GTHE, buf, 3), 4);
    ck_assert(memcmp(buf, " th#", 4) == 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, B_GTHE, NULL, 0), 4);

    char *s = decode_all(t, ids, 6, &len);
    ck_assert_str_eq(s, " the cat<tool>\n");
    free(s);
    ck_assert_int_eq(ks_tokenizer_decode_ex(t, ids, 6, KS_TOK_RENDER_SPECIAL,
                                            buf, sizeof buf, &len), KS_OK);
    ck_assert_str_eq(buf, "<|im_start|> the cat<tool>\n<|im_end|>");
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_roundtrip_and_bad_utf8)
{
    ks_tokenizer *t = make_bpe("smollm");
    static const char *const texts[] = {
        "Hello, world!", "  two  spaces  ", "line\nbreaks\r\n\ttab",
        "Caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xD0\x9C\xD0\xB8\xD1\x80",
        ("\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 \xF0\x9F\x87\xAB"
         "\xF0\x9F\x87\xB7"), "123 456", "it's I'M",
    };
    size_t n, len;

    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        expect_roundtrip(t, texts[i], strlen(texts[i]));
    /* a malformed byte is read as U+FFFD, as llama.cpp does */
    int32_t *ids = encode_all(t, "a\xFF" "b\xE2\x82", 5, false, false, &n);
    char *back = decode_all(t, ids, n, &len);
    ck_assert_str_eq(back, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD");
    free(ids);
    free(back);
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(bpe_clean_spaces)
{
    /* GPT-2 rules come with llama.cpp's clean_spaces in decode */
    ks_tokenizer *g = make_bpe("gpt-2");
    ks_tokenizer *s = make_bpe("smollm");
    const char *text = "a . b 's c ' d";
    size_t n, len;
    int32_t *ids = encode_all(g, text, strlen(text), false, false, &n);
    char *back = decode_all(g, ids, n, &len);
    ck_assert_str_eq(back, "a. b's c'd");
    free(back);
    back = decode_all(s, ids, n, &len);
    ck_assert_str_eq(back, text);
    free(back);
    free(ids);
    ks_tokenizer_destroy(g);
    ks_tokenizer_destroy(s);
}
END_TEST

START_TEST(encode_count_then_fill)
{
    ks_tokenizer *t = make_bpe("gpt-2");
    int32_t ids[8] = { -7, -7, -7, -7, -7, -7, -7, -7 };
    size_t n = 0;

    ck_assert_int_eq(ks_tokenizer_encode(t, " the cat", 8, false, false, NULL,
                                         0, &n), KS_OK);
    ck_assert_uint_eq(n, 2);
    /* too small: needed count, first ids written, an error */
    n = 0;
    ck_assert_int_eq(ks_tokenizer_encode(t, " the cat", 8, false, false, ids,
                                         1, &n), KS_ERR_INVALID_ARG);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], B_GTHE);
    ck_assert_int_eq(ids[1], -7);
    ck_assert_int_eq(ks_tokenizer_encode(t, " the cat", 8, false, false, ids,
                                         2, &n), KS_OK);
    ck_assert_int_eq(ids[1], B_GCAT);
    /* add_special: this vocabulary adds nothing by default */
    ck_assert_int_eq(ks_tokenizer_encode(t, "", 0, true, true, NULL, 0, &n),
                     KS_OK);
    ck_assert_uint_eq(n, 0);
    /* decode too small */
    char buf[4];
    ck_assert_int_eq(ks_tokenizer_decode(t, ids, 2, buf, sizeof buf, &n),
                     KS_ERR_INVALID_ARG);
    ck_assert_uint_eq(n, 8);
    ck_assert(memcmp(buf, " the", 4) == 0);
    ck_assert_int_eq(ks_tokenizer_decode(t, ids, 2, NULL, 0, &n), KS_OK);
    ck_assert_uint_eq(n, 8);
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(vocab_errors)
{
    ks_tok_vocab v;
    ks_tokenizer *t = (ks_tokenizer *)&v;
    const char *tok[] = { "a" };

    memset(&v, 0, sizeof(v));
    ck_assert_int_eq(ks_tokenizer_create_from_vocab(&v, &t),
                     KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(t);
    v.n_tokens = 1;
    v.tokens = tok;
    v.model = 7;
    ck_assert_int_eq(ks_tokenizer_create_from_vocab(&v, &t),
                     KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(t);
    /* out-of-range special ids are dropped, not trusted */
    v.model = KS_TOK_MODEL_SPM;
    v.bos = 5;
    v.eos = 0;
    v.unk = v.eot = v.eom = v.pad = v.sep = -1;
    ck_assert_int_eq(ks_tokenizer_create_from_vocab(&v, &t), KS_OK);
    ck_assert_int_eq(ks_tokenizer_bos(t), -1);
    ck_assert_int_eq(ks_tokenizer_eos(t), 0);
    ck_assert(ks_tokenizer_is_eog(t, 0));
    /* no byte tokens and no unknown token: an error, not a crash */
    size_t n;
    ck_assert_int_eq(ks_tokenizer_encode(t, "b", 1, false, false, NULL, 0,
                                         &n), KS_ERR_UNSUPPORTED);
    ks_tokenizer_destroy(t);
    ks_tokenizer_destroy(NULL);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* synthetic SentencePiece                                                 */

#define LB "\xE2\x96\x81" /* U+2581, SentencePiece's space */

enum { S_UNK, S_BOS, S_EOS, S_SP, S_A, S_B, S_SPA, S_AB, S_BA, S_USER,
       S_EOS_USER, S_N };

static ks_tokenizer *
make_spm(int8_t space_prefix)
{
    static const char *const tokens[S_N] = {
        "<unk>", "<s>", "</s>", LB, "a", "b", LB "a", "ab", "ba", "<u>",
        "<eos>",
    };
    static const float scores[S_N] = {
        0, 0, 0, -1.0f, -2.0f, -2.0f, -0.5f, -0.5f, -1.0f, 0, 0,
    };
    static const int32_t types[S_N] = {
        KS_TOK_UNKNOWN, KS_TOK_CONTROL, KS_TOK_CONTROL, KS_TOK_NORMAL,
        KS_TOK_NORMAL, KS_TOK_NORMAL, KS_TOK_NORMAL, KS_TOK_NORMAL,
        KS_TOK_NORMAL, KS_TOK_USER_DEFINED, KS_TOK_USER_DEFINED,
    };
    ks_tok_vocab v;
    ks_tokenizer *t = NULL;

    memset(&v, 0, sizeof(v));
    v.model = KS_TOK_MODEL_SPM;
    v.n_tokens = S_N;
    v.tokens = tokens;
    v.scores = scores;
    v.types = types;
    v.bos = S_BOS;
    v.eos = S_EOS;
    v.unk = S_UNK;
    v.eot = v.eom = v.pad = v.sep = -1;
    v.add_space_prefix = space_prefix;
    ck_assert_int_eq(ks_tokenizer_create_from_vocab(&v, &t), KS_OK);
    return t;
}

START_TEST(spm_merges_by_score)
{
    ks_tokenizer *t = make_spm(0);

    ck_assert_str_eq(ks_tokenizer_model_name(t), "llama");
    ck_assert(ks_tokenizer_add_bos(t));
    ck_assert(!ks_tokenizer_add_eos(t));
    /* "▁ab": ▁a and ab tie at -0.5, the leftmost wins; ▁ab is no token */
    expect_ids(t, "ab", true, false, IDS(S_BOS, S_SPA, S_B));
    /* "▁bab": ab (-0.5) beats ba (-1.0) */
    expect_ids(t, "bab", false, false, IDS(S_SP, S_B, S_AB));
    /* no byte tokens: unknown characters give <unk> per byte */
    expect_ids(t, "ab \xC3\xA9", false, false,
               IDS(S_SPA, S_B, S_SP, S_UNK, S_UNK));
    /* specials and the space prefix after them */
    expect_ids(t, "<s>a</s>a", false, true,
               IDS(S_BOS, S_SPA, S_EOS, S_SPA));
    expect_ids(t, "a<u>a", false, false, IDS(S_SPA, S_USER, S_SPA));
    /* a user-defined token with an end-of-generation text becomes control
     * (llama.cpp): plain text without parse_special */
    ck_assert(ks_tokenizer_is_eog(t, S_EOS_USER));
    ck_assert(ks_tokenizer_is_control(t, S_EOS_USER));
    expect_ids(t, "a<eos>", false, true, IDS(S_SPA, S_EOS_USER));
    expect_ids(t, "a<eos>", false, false,
               IDS(S_SPA, S_UNK, S_UNK, S_UNK, S_UNK, S_UNK));
    ks_tokenizer_destroy(t);

    t = make_spm(-1);  /* gemma-style: no space prefix */
    expect_ids(t, "ab", false, false, IDS(S_AB));
    expect_ids(t, " a", false, false, IDS(S_SPA));
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(spm_decode)
{
    ks_tokenizer *t = make_spm(0);
    char buf[16];
    size_t len;

    ck_assert_uint_eq(ks_tokenizer_piece(t, S_SPA, buf, sizeof buf), 2);
    ck_assert(memcmp(buf, " a", 2) == 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, S_BOS, buf, sizeof buf), 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, S_UNK, buf, sizeof buf), 0);
    ck_assert_uint_eq(ks_tokenizer_piece(t, S_USER, buf, sizeof buf), 3);
    /* the space the encoder added is dropped, also after a BOS */
    ck_assert_int_eq(ks_tokenizer_decode(t, (int32_t[]){ S_SPA, S_B }, 2, buf,
                                         sizeof buf, &len), KS_OK);
    ck_assert_str_eq(buf, "ab");
    ck_assert_int_eq(ks_tokenizer_decode(t, (int32_t[]){ S_BOS, S_SPA, S_B },
                                         3, buf, sizeof buf, &len), KS_OK);
    ck_assert_str_eq(buf, "ab");
    ck_assert_int_eq(ks_tokenizer_decode(t, (int32_t[]){ S_SP, S_SPA }, 2,
                                         buf, sizeof buf, &len), KS_OK);
    ck_assert_str_eq(buf, " a");
    ks_tokenizer_destroy(t);

    t = make_spm(-1);
    ck_assert_int_eq(ks_tokenizer_decode(t, (int32_t[]){ S_SPA, S_B }, 2, buf,
                                         sizeof buf, &len), KS_OK);
    ck_assert_str_eq(buf, " ab");
    ks_tokenizer_destroy(t);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* from GGUF metadata (files written in memory with the project's writer)  */

/* A GGUF holding a tiny SPM or BPE vocabulary with tokenizer.ggml.pre
 * |pre| (NULL: no such key); |skip| names one key to leave out,
 * |bad_scores| writes a scores array one element short. *bytes_out gets
 * the file's buffer, to free after ks_gguf_destroy. */
static ks_gguf *
tiny_gguf_pre(const char *model, const char *pre, const char *skip,
              bool bad_scores, void **bytes_out)
{
    /* SPM spells a space U+2581, byte-level BPE U+0120 */
    bool bpe = strcmp(model, "gpt2") == 0;
    const char *const toks[] = { "<unk>", "<s>", "</s>", bpe ? G_SP : LB,
                                 "a", bpe ? G_SP "a" : LB "a", "<|im_end|>" };
    static const float scores[] = { 0, 0, 0, -1, -2, -0.5f, 0 };
    static const int32_t types[] = { 2, 3, 3, 1, 1, 1, 4 };
    static const char *const merges[] = { G_SP " a" };
    ks_gguf_writer *w = NULL;
    ks_gguf *g = NULL;
    void *bytes = NULL;
    size_t n = 0;

    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    if (!skip || strcmp(skip, "tokenizer.ggml.model"))
        ck_assert_int_eq(ks_gguf_writer_set_str(w, "tokenizer.ggml.model",
                                                model), KS_OK);
    if (!skip || strcmp(skip, "tokenizer.ggml.tokens"))
        ck_assert_int_eq(ks_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
                                                    toks, NULL, 7), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "tokenizer.ggml.scores",
                                            KS_GGUF_F32, scores,
                                            bad_scores ? 6 : 7), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "tokenizer.ggml.token_type",
                                            KS_GGUF_I32, types, 7), KS_OK);
    if (!skip || strcmp(skip, "tokenizer.ggml.merges"))
        ck_assert_int_eq(ks_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges",
                                                    merges, NULL, 1), KS_OK);
    if (pre)
        ck_assert_int_eq(ks_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre),
                         KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
                                            1), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id",
                                            2), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w,
                                            "tokenizer.ggml.padding_token_id",
                                            0xFFFFFFFFu), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token",
                                             true), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_mem(w, &bytes, &n), KS_OK);
    ks_gguf_writer_destroy(w);
    /* ks_gguf_open_mem borrows the buffer: the caller frees it after */
    ck_assert_int_eq(ks_gguf_open_mem(bytes, n, &g), KS_OK);
    *bytes_out = bytes;
    return g;
}

static ks_gguf *
tiny_gguf(const char *model, const char *skip, bool bad_scores,
          void **bytes_out)
{
    return tiny_gguf_pre(model, "qwen2", skip, bad_scores, bytes_out);
}

START_TEST(gguf_spm)
{
    void *bytes;
    ks_gguf *g = tiny_gguf("llama", NULL, false, &bytes);
    ks_tokenizer *t = NULL;

    ck_assert_int_eq(ks_tokenizer_create(g, &t), KS_OK);
    ks_gguf_destroy(g);            /* nothing of the file is kept */
    free(bytes);
    ck_assert_str_eq(ks_tokenizer_model_name(t), "llama");
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "default");
    ck_assert_int_eq(ks_tokenizer_bos(t), 1);
    ck_assert_int_eq(ks_tokenizer_eos(t), 2);
    ck_assert_int_eq(ks_tokenizer_unk(t), 0);
    ck_assert(ks_tokenizer_add_bos(t));
    ck_assert(ks_tokenizer_add_eos(t));
    /* <|im_end|> was user-defined; its text makes it control and an end */
    ck_assert(ks_tokenizer_is_eog(t, 6));
    ck_assert(ks_tokenizer_is_eog(t, 2));
    expect_ids(t, "aa", true, false, IDS(1, 5, 4, 2));
    expect_ids(t, "a<|im_end|>", false, true, IDS(5, 6));
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(gguf_bpe)
{
    void *bytes;
    ks_gguf *g = tiny_gguf("gpt2", NULL, false, &bytes);
    ks_tokenizer *t = NULL;

    ck_assert_int_eq(ks_tokenizer_create(g, &t), KS_OK);
    ks_gguf_destroy(g);
    free(bytes);
    ck_assert_str_eq(ks_tokenizer_model_name(t), "gpt2");
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "qwen2");
    ck_assert(!ks_tokenizer_add_bos(t));
    ck_assert(ks_tokenizer_add_eos(t));
    ck_assert_int_eq(ks_tokenizer_unk(t), -1);
    /* the merge "Ġ a" (rank 0) joins the two symbols */
    expect_ids(t, " a", true, false, IDS(5, 2));
    /* bytes without a token are dropped, as in llama.cpp */
    expect_ids(t, "xa", false, false, IDS(4));
    ks_tokenizer_destroy(t);
}
END_TEST

/* tokenizer.ggml.pre: unknown is refused (naming it) unless the caller
 * asks for the GPT-2 rules; missing is llama.cpp's "default", as there. */
START_TEST(gguf_pre_unknown_and_missing)
{
    void *bytes;
    ks_gguf *g = tiny_gguf_pre("gpt2", "no-such-pre", NULL, false, &bytes);
    ks_tokenizer *t = NULL;

    ck_assert_int_eq(ks_tokenizer_create(g, &t), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "tokenizer.ggml.pre"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'no-such-pre'"));
    ck_assert_int_eq(ks_tokenizer_create_ex(g,
                                            KS_TOK_CREATE_PRE_FALLBACK_GPT2,
                                            &t), KS_OK);
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "gpt-2");
    ks_tokenizer_destroy(t);
    ks_gguf_destroy(g);
    free(bytes);

    g = tiny_gguf_pre("gpt2", NULL, NULL, false, &bytes);
    ck_assert_int_eq(ks_tokenizer_create(g, &t), KS_OK);
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "default");
    ks_tokenizer_destroy(t);
    ks_gguf_destroy(g);
    free(bytes);

    /* SPM has no pre-tokenizer: an unknown name there is no error */
    g = tiny_gguf_pre("llama", "no-such-pre", NULL, false, &bytes);
    ck_assert_int_eq(ks_tokenizer_create(g, &t), KS_OK);
    ks_tokenizer_destroy(t);
    ks_gguf_destroy(g);
    free(bytes);
}
END_TEST

START_TEST(gguf_errors)
{
    static const struct {
        const char *model, *skip;
        bool        bad_scores;
        ks_status   st;
        const char *msg;
    } cases[] = {
        { "llama", "tokenizer.ggml.model", false, KS_ERR_CORRUPT,
          "tokenizer.ggml.model" },
        { "bert", NULL, false, KS_ERR_UNSUPPORTED, "'bert'" },
        { "llama", "tokenizer.ggml.tokens", false, KS_ERR_CORRUPT,
          "tokenizer.ggml.tokens" },
        { "llama", NULL, true, KS_ERR_CORRUPT, "tokenizer.ggml.scores" },
        { "gpt2", "tokenizer.ggml.merges", false, KS_ERR_CORRUPT,
          "tokenizer.ggml.merges" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        void *bytes;
        ks_gguf *g = tiny_gguf(cases[i].model, cases[i].skip,
                               cases[i].bad_scores, &bytes);
        ks_tokenizer *t = (ks_tokenizer *)g;
        ck_assert_int_eq(ks_tokenizer_create(g, &t), cases[i].st);
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(ks_last_error(), cases[i].msg) != NULL,
                      "error \"%s\" does not name %s", ks_last_error(),
                      cases[i].msg);
        ks_gguf_destroy(g);
        free(bytes);
    }
}
END_TEST

/* ---------------------------------------------------------------------- */
/* real vocabularies                                                       */

typedef struct model_fx {
    ks_gguf      *g;
    ks_tokenizer *t;
} model_fx;

static model_fx g_stories, g_smollm, g_gemma;

static char *
path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *
stories_path(void)
{
    const char *shared = getenv("KESTREL_SHARED_DIR");
    if (!shared || !*shared)
        return NULL;
    return path_join(shared, "models/stories260K/stories260K-f32.gguf");
}

static char *
model_path(const char *file)
{
    const char *dir = getenv("KESTREL_MODEL_DIR");
    char *home_dir = NULL, *p;
    if (!dir || !*dir) {
        const char *home = getenv("HOME");
        if (!home)
            return NULL;
        home_dir = path_join(home, ".cache/kestrel/models");
        dir = home_dir;
    }
    p = dir ? path_join(dir, file) : NULL;
    free(home_dir);
    return p;
}

/* Opens |path| into |fx| if the file is there; false (with a message)
 * when it is not. */
static bool
open_model(model_fx *fx, char *path, const char *what)
{
    bool ok = false;
    if (path && access(path, R_OK) == 0) {
        if (ks_gguf_open(path, &fx->g) == KS_OK &&
            ks_tokenizer_create(fx->g, &fx->t) == KS_OK)
            ok = true;
        else
            fprintf(stderr, "tokenizer: cannot load %s: %s\n", path,
                    ks_last_error());
    } else {
        printf("SKIP %s tests: no model file at %s\n", what,
               path ? path : "(KESTREL_SHARED_DIR not set)");
    }
    free(path);
    return ok;
}

static void
check_cases(const ks_tokenizer *t, const tok_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect_ids(t, cases[i].text, true, cases[i].parse_special,
                   cases[i].ids, cases[i].n_ids);
}

/* Texts for round trips: decode(encode(x)) must give x back. */
static const char *const k_roundtrip[] = {
    "The quick brown fox jumps over the lazy dog.",
    "  leading, trailing and   multiple spaces  ",
    "line one\nline two\n\n\tindented\r\n",
    "12345 and 3.14 and 1,000,000",
    "I'm sure they don't; we'll see, you're RIGHT'S",
    ("Caf\xC3\xA9, na\xC3\xAFve, d\xC3\xA9j\xC3\xA0 vu; Gr\xC3\xB6\xC3\x9F" "e"),
    "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86",
    ("\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC\xD0\xB8"
     "\xD1\x80!"),
    ("\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91"
     "\xA7 \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 \xF0\x9F\x98\x80"),
    "int main(void) {\n    return 0;\n}\n",
};

static void
check_roundtrips(const ks_tokenizer *t)
{
    for (size_t i = 0; i < sizeof k_roundtrip / sizeof k_roundtrip[0]; i++)
        expect_roundtrip(t, k_roundtrip[i], strlen(k_roundtrip[i]));
}

static void
check_piece(const ks_tokenizer *t, int32_t id, unsigned flags,
            const char *want)
{
    char buf[64];
    size_t n = ks_tokenizer_piece_ex(t, id, flags, buf, sizeof buf);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert(memcmp(buf, want, n) == 0);
}

START_TEST(stories_ids)
{
    check_cases(g_stories.t, k_stories, sizeof k_stories / sizeof k_stories[0]);
}
END_TEST

START_TEST(stories_roundtrip)
{
    const ks_tokenizer *t = g_stories.t;
    static const char bad[] = "bad\xFF\xC3(utf8 \xE2\x82";
    size_t n, len;

    check_roundtrips(t);
    /* byte fallback keeps even malformed UTF-8 ... */
    expect_roundtrip(t, bad, sizeof bad - 1);
    /* ... except where a bad lead byte swallows part of the U+2581 that
     * stands for a space (its bytes come back raw), as in llama.cpp */
    int32_t *ids = encode_all(t, "x\xF0 y", 4, false, false, &n);
    char *back = decode_all(t, ids, n, &len);
    ck_assert_str_eq(back, "x\xF0\xE2\x96\x81y");
    free(ids);
    free(back);
    expect_roundtrip(t, "\x80\x81\xFE\xFF\xC0\x80", 6);
}
END_TEST

START_TEST(stories_flags)
{
    const ks_tokenizer *t = g_stories.t;
    size_t n;

    ck_assert_str_eq(ks_tokenizer_model_name(t), "llama");
    ck_assert_uint_eq(ks_tokenizer_n_vocab(t), 512);
    ck_assert_int_eq(ks_tokenizer_bos(t), 1);
    ck_assert_int_eq(ks_tokenizer_eos(t), 2);
    ck_assert_int_eq(ks_tokenizer_unk(t), 0);
    ck_assert(ks_tokenizer_add_bos(t));
    ck_assert(!ks_tokenizer_add_eos(t));
    ck_assert(ks_tokenizer_is_eog(t, 2));
    ck_assert(!ks_tokenizer_is_eog(t, 1));
    ck_assert(!ks_tokenizer_is_eog(t, 317));
    ck_assert_int_eq(ks_tokenizer_find(t, "\xE2\x96\x81Lily"), 317);
    ck_assert_int_eq(ks_tokenizer_find(t, "<0x41>"), 3 + 0x41);
    ck_assert_int_eq(ks_tokenizer_find(t, "no such token"), -1);
    ck_assert_str_eq(ks_tokenizer_text(t, 317, &n), "\xE2\x96\x81Lily");
    ck_assert_ptr_null(ks_tokenizer_text(t, 512, &n));
    check_piece(t, 317, 0, " Lily");
    check_piece(t, 3 + 0x41, 0, "A");
    check_piece(t, 1, 0, "");
    check_piece(t, 1, KS_TOK_RENDER_SPECIAL, "<s>");
    /* add_special adds the BOS, nothing else */
    expect_ids(t, "Lily", true, false, IDS(1, 317));
    expect_ids(t, "Lily", false, false, IDS(317));
    expect_ids(t, "", true, false, IDS(1));
    expect_ids(t, "", false, false, (const int32_t *)"", 0);
}
END_TEST

START_TEST(stories_long_prompt)
{
    /* a 4 KB prompt: count-then-fill and a round trip */
    const ks_tokenizer *t = g_stories.t;
    char *text = malloc(4097);
    size_t len = 0;

    while (len + 60 < 4096) {
        const char *s = "Once upon a time, Lily saw a big red ball in the park. ";
        memcpy(text + len, s, strlen(s));
        len += strlen(s);
    }
    text[len] = '\0';
    expect_roundtrip(t, text, len);
    free(text);
}
END_TEST

START_TEST(smollm_ids)
{
    check_cases(g_smollm.t, k_smollm, sizeof k_smollm / sizeof k_smollm[0]);
}
END_TEST

START_TEST(smollm_roundtrip)
{
    check_roundtrips(g_smollm.t);
}
END_TEST

START_TEST(smollm_flags)
{
    const ks_tokenizer *t = g_smollm.t;
    int32_t im_start = ks_tokenizer_find(t, "<|im_start|>");
    int32_t im_end = ks_tokenizer_find(t, "<|im_end|>");
    int32_t eot = ks_tokenizer_find(t, "<|endoftext|>");

    ck_assert_str_eq(ks_tokenizer_model_name(t), "gpt2");
    ck_assert_str_eq(ks_tokenizer_pre_name(t), "smollm");
    ck_assert_uint_eq(ks_tokenizer_n_vocab(t), 49152);
    ck_assert_int_eq(ks_tokenizer_bos(t), 1);
    ck_assert_int_eq(ks_tokenizer_eos(t), 2);
    ck_assert(!ks_tokenizer_add_bos(t));
    ck_assert_int_eq(im_start, 1);
    ck_assert_int_eq(im_end, 2);
    ck_assert_int_eq(eot, 0);
    ck_assert(ks_tokenizer_is_eog(t, im_end));
    ck_assert(ks_tokenizer_is_eog(t, eot));
    ck_assert(!ks_tokenizer_is_eog(t, im_start));
    check_piece(t, im_start, 0, "");
    check_piece(t, im_start, KS_TOK_RENDER_SPECIAL, "<|im_start|>");
    check_piece(t, ks_tokenizer_find(t, "\xC4\xA0the"), 0, " the");
    check_piece(t, ks_tokenizer_find(t, "\xC4\x8A"), 0, "\n");
    /* add_special adds nothing: the model asks for no BOS */
    expect_ids(t, "Hi", true, true, IDS(26843));
}
END_TEST

START_TEST(gemma_ids)
{
    check_cases(g_gemma.t, k_gemma, sizeof k_gemma / sizeof k_gemma[0]);
}
END_TEST

START_TEST(gemma_roundtrip)
{
    check_roundtrips(g_gemma.t);
    /* whitespace and newline runs are user-defined tokens there */
    expect_roundtrip(g_gemma.t, "a\n\n\nb    c\t\td", 12);
}
END_TEST

START_TEST(gemma_flags)
{
    const ks_tokenizer *t = g_gemma.t;

    ck_assert_str_eq(ks_tokenizer_model_name(t), "llama");
    ck_assert_uint_eq(ks_tokenizer_n_vocab(t), 262144);
    ck_assert_int_eq(ks_tokenizer_bos(t), 2);
    ck_assert_int_eq(ks_tokenizer_eos(t), 1);
    ck_assert(ks_tokenizer_add_bos(t));
    ck_assert_int_eq(ks_tokenizer_find(t, "<start_of_turn>"), 105);
    ck_assert_int_eq(ks_tokenizer_find(t, "<end_of_turn>"), 106);
    ck_assert(ks_tokenizer_is_eog(t, 106));
    ck_assert(ks_tokenizer_is_eog(t, 1));
    ck_assert(!ks_tokenizer_is_eog(t, 105));
    ck_assert(!ks_tokenizer_is_eog(t, 2));
    check_piece(t, 105, 0, "");
    check_piece(t, 138, 0, "  ");            /* user-defined "  " */
    check_piece(t, ks_tokenizer_find(t, "<0x0A>"), 0, "\n");
    /* "</s>" is a user-defined (HTML) token here that llama.cpp's list of
     * end-of-generation texts makes control: plain text without
     * parse_special (ids from llama-tokenize) */
    ck_assert_int_eq(ks_tokenizer_find(t, "</s>"), 212);
    ck_assert(ks_tokenizer_is_eog(t, 212));
    expect_ids(t, "</s>/", true, true, IDS(2, 212, 236786));
    expect_ids(t, "</s>/", true, false, IDS(2, 954, 236751, 25492));
    /* no space prefix: "Hi" is not "▁Hi" */
    ck_assert_int_eq(ks_tokenizer_find(t, "Hi"), 10979);
    expect_ids(t, "Hi", true, false, IDS(2, 10979));
}
END_TEST

/* ---------------------------------------------------------------------- */

static Suite *
tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc;

    tc = tcase_create("bpe_synthetic");
    tcase_add_test(tc, bpe_merges_by_rank);
    tcase_add_test(tc, bpe_pre_gpt2);
    tcase_add_test(tc, bpe_pre_smollm);
    tcase_add_test(tc, bpe_pre_qwen2_llama3);
    tcase_add_test(tc, bpe_pre_multi_regex);
    tcase_add_test(tc, bpe_unknown_pre_refused);
    tcase_add_test(tc, bpe_unicode_classes);
    tcase_add_test(tc, bpe_specials);
    tcase_add_test(tc, bpe_pieces_and_decode);
    tcase_add_test(tc, bpe_roundtrip_and_bad_utf8);
    tcase_add_test(tc, bpe_clean_spaces);
    tcase_add_test(tc, encode_count_then_fill);
    tcase_add_test(tc, vocab_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("spm_synthetic");
    tcase_add_test(tc, spm_merges_by_score);
    tcase_add_test(tc, spm_decode);
    suite_add_tcase(s, tc);

    tc = tcase_create("gguf");
    tcase_add_test(tc, gguf_spm);
    tcase_add_test(tc, gguf_bpe);
    tcase_add_test(tc, gguf_pre_unknown_and_missing);
    tcase_add_test(tc, gguf_errors);
    suite_add_tcase(s, tc);

    if (open_model(&g_stories, stories_path(), "stories260K")) {
        tc = tcase_create("stories260K");
        tcase_add_test(tc, stories_ids);
        tcase_add_test(tc, stories_roundtrip);
        tcase_add_test(tc, stories_flags);
        tcase_add_test(tc, stories_long_prompt);
        suite_add_tcase(s, tc);
    }
    if (open_model(&g_smollm, model_path("SmolLM2-135M-Instruct.Q4_1.gguf"),
                   "SmolLM2")) {
        tc = tcase_create("smollm2");
        tcase_add_test(tc, smollm_ids);
        tcase_add_test(tc, smollm_roundtrip);
        tcase_add_test(tc, smollm_flags);
        suite_add_tcase(s, tc);
    }
    if (open_model(&g_gemma, model_path("gemma-3-270m-q4_k_m.gguf"),
                   "gemma-3-270m")) {
        tc = tcase_create("gemma3");
        tcase_add_test(tc, gemma_ids);
        tcase_add_test(tc, gemma_roundtrip);
        tcase_add_test(tc, gemma_flags);
        suite_add_tcase(s, tc);
    }
    return s;
}

static void
close_model(model_fx *fx)
{
    ks_tokenizer_destroy(fx->t);
    ks_gguf_destroy(fx->g);
}

int
main(void)
{
    SRunner *sr = srunner_create(tokenizer_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    close_model(&g_stories);
    close_model(&g_smollm);
    close_model(&g_gemma);
    return failed ? 1 : 0;
}
