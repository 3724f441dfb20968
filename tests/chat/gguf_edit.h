/* Test helper: a copy of a GGUF file with some metadata changed, for the
 * variants the tests need of a real model (another chat template, no BOS,
 * special tokens in the vocabulary) without shipping more model files. */
#ifndef KS_TEST_GGUF_EDIT_H
#define KS_TEST_GGUF_EDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"

typedef enum test_edit_type {
    TEST_EDIT_STR,
    TEST_EDIT_BOOL,
    TEST_EDIT_U32,
    TEST_EDIT_DEL,     /* drops the key */
} test_edit_type;

typedef struct test_gguf_edit {
    const char    *key;
    test_edit_type type;
    const char    *str;    /* TEST_EDIT_STR */
    bool           b;      /* TEST_EDIT_BOOL */
    uint32_t       u32;    /* TEST_EDIT_U32 */
} test_gguf_edit;

/* Writes |out|: |in|'s metadata and tensors, with each edit setting (or
 * adding) its key, and the last |n_specials| entries of
 * tokenizer.ggml.tokens replaced by |specials| as control tokens (type 3,
 * score 0). Nested arrays are refused (KS_ERR_UNSUPPORTED). */
ks_status test_gguf_copy(const char *in, const char *out,
                         const test_gguf_edit *edits, size_t n_edits,
                         const char *const *specials, size_t n_specials);

#endif
