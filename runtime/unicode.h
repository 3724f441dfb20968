/* Unicode helpers for the tokenizer: code point classes (\p{L}, \p{N},
 * \p{P}, \p{M}, \p{S}, \s), lenient UTF-8 decoding as llama.cpp does it, and GPT-2's byte <->
 * code point table for byte-level BPE. Internal; not installed.
 *
 * All functions are pure and thread safe. */
#ifndef KS_UNICODE_H
#define KS_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Code point classes, as bits. */
enum {
    KS_UCP_LETTER = 1, /* general category L* */
    KS_UCP_NUMBER = 2, /* general category N* */
    KS_UCP_SPACE = 4,  /* Unicode property White_Space */
    KS_UCP_PUNCT = 8,  /* general category P* */
    KS_UCP_MARK = 16,  /* general category M* */
    KS_UCP_SYMBOL = 32, /* general category S* */
};

/* Generated table (runtime/unicode_tables.c, ci/gen_unicode_tables.py). */
typedef struct ks_unicode_range {
    uint32_t first, last; /* inclusive */
    uint32_t flags;       /* one of KS_UCP_LETTER, _NUMBER, _PUNCT, _MARK,
                           * _SYMBOL */
} ks_unicode_range;

extern const ks_unicode_range ks_unicode_ranges[];
extern const uint32_t ks_unicode_n_ranges;
extern const char ks_unicode_version[]; /* Unicode version of the table */

/* KS_UCP_* bits of |cp|: white space gives KS_UCP_SPACE alone, anything
 * else its general category's bit; 0 for the other categories (Z, C,
 * unassigned) and values past U+10FFFF. */
unsigned ks_unicode_flags(uint32_t cp);

/* Bytes that a UTF-8 sequence starting with |lead| claims, from its top
 * four bits (1 for ASCII and stray continuation bytes, 2, 3 or 4); no
 * validation, as llama.cpp's unicode_len_utf8. */
static inline size_t
ks_utf8_len(uint8_t lead)
{
    static const uint8_t len[16] = { 1, 1, 1, 1, 1, 1, 1, 1,
                                     1, 1, 1, 1, 2, 2, 3, 4 };
    return len[lead >> 4];
}

/* Decodes one code point from s[0..n) (n >= 1) and stores the bytes used
 * in *used. Lenient in llama.cpp's way: the lead byte and the continuation
 * bytes' top bits are checked, overlong forms and surrogates are accepted.
 * A malformed sequence or one decoding past U+10FFFF gives U+FFFD with
 * *used = 1. */
uint32_t ks_utf8_decode(const uint8_t *s, size_t n, size_t *used);

/* Writes the UTF-8 form of |cp| (<= U+10FFFF) to out[0..4) and returns its
 * length (1..4); 0 for larger values. */
size_t ks_utf8_encode(uint32_t cp, uint8_t out[4]);

/* GPT-2 byte-level BPE: each byte value stands for one printable code
 * point (0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF for themselves, the other 68
 * bytes for U+0100.. in byte order; space is U+0120 'Ġ'). */
uint32_t ks_gpt2_byte_to_cp(uint8_t b);
/* The byte that |cp| stands for, or -1 if it is not in the table. */
int ks_gpt2_cp_to_byte(uint32_t cp);

#endif
