/* Unicode helpers for the tokenizer.
 *
 * Letters, numbers, punctuation, marks and symbols come from the
 * generated range table (binary search, with an ASCII fast path for
 * letters and digits); white space is the Unicode White_Space property,
 * a fixed list (PropList.txt), which is also what llama.cpp uses. UTF-8
 * decoding reproduces llama.cpp's lenient decoder so that byte-level BPE
 * sees the same code points for malformed input. */
#include "runtime/unicode.h"

static bool
is_white_space(uint32_t cp)
{
    /* PropList.txt, White_Space */
    if (cp <= 0x20)
        return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85)
        return false;
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

unsigned
ks_unicode_flags(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return KS_UCP_LETTER;
        if (cp >= '0' && cp <= '9')
            return KS_UCP_NUMBER;
        if (is_white_space(cp))
            return KS_UCP_SPACE;
        if (cp < 0x21 || cp == 0x7F)
            return 0;          /* controls */
        /* ASCII punctuation and symbols: from the table */
    } else if (is_white_space(cp)) {
        return KS_UCP_SPACE;
    }
    uint32_t lo = 0, hi = ks_unicode_n_ranges;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const ks_unicode_range *r = &ks_unicode_ranges[mid];
        if (cp < r->first)
            hi = mid;
        else if (cp > r->last)
            lo = mid + 1;
        else
            return r->flags;
    }
    return 0;
}

uint32_t
ks_utf8_decode(const uint8_t *s, size_t n, size_t *used)
{
    uint8_t b0 = s[0];
    size_t len;
    uint32_t cp;

    if (b0 < 0x80) {
        *used = 1;
        return b0;
    }
    if ((b0 & 0x40) == 0)
        goto bad;              /* stray continuation byte */
    if ((b0 & 0x20) == 0) {
        len = 2;
        cp = b0 & 0x1F;
    } else if ((b0 & 0x10) == 0) {
        len = 3;
        cp = b0 & 0x0F;
    } else if ((b0 & 0x08) == 0) {
        len = 4;
        cp = b0 & 0x07;
    } else {
        goto bad;
    }
    if (len > n)
        goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            goto bad;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp > 0x10FFFF)
        goto bad;              /* llama.cpp could not re-encode it */
    *used = len;
    return cp;
bad:
    *used = 1;
    return 0xFFFD;
}

size_t
ks_utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp <= 0x10FFFF) {
        out[0] = (uint8_t)(0xF0 | (cp >> 18));
        out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (uint8_t)(0x80 | (cp & 0x3F));
        return 4;
    }
    return 0;
}

/* Bytes that stand for themselves in GPT-2's table. */
static bool
gpt2_self(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
           (b >= 0xAE && b <= 0xFF);
}

uint32_t
ks_gpt2_byte_to_cp(uint8_t b)
{
    if (gpt2_self(b))
        return b;
    /* The others are numbered in byte order from U+0100: 0x00..0x20 are
     * the first 33, 0x7F..0xA0 the next 34, then 0xAD. */
    if (b <= 0x20)
        return 0x100u + b;
    if (b <= 0xA0)
        return 0x100u + 33u + (b - 0x7Fu);
    return 0x100u + 67u;       /* 0xAD */
}

int
ks_gpt2_cp_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return gpt2_self(cp) ? (int)cp : -1;
    if (cp < 0x100 + 33)
        return (int)(cp - 0x100);
    if (cp < 0x100 + 67)
        return (int)(cp - 0x100 - 33 + 0x7F);
    if (cp == 0x100 + 67)
        return 0xAD;
    return -1;
}
