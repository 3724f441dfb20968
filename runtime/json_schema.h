/* Structured output: a JSON-schema subset compiled into a pushdown
 * recognizer over bytes, and the token mask built on it. Internal; the
 * public side is ks_generate_params.json_schema and ks_json_schema_check.
 *
 * The recognizer accepts compact JSON only (no whitespace anywhere) so
 * that generation cannot idle in blanks. It answers, byte by byte,
 * whether the text so far is a prefix of a value the schema accepts, and
 * whether the text is a whole such value. Every prefix it accepts can be
 * completed (numbers and strings are bounded where the schema says so,
 * numbers always: 15 integer digits, 16 fraction digits, 3 exponent
 * digits). Strings are checked as UTF-8 (no overlongs, no surrogates).
 *
 * The subset: type (object, array, string, number, integer, boolean,
 * null), properties, required, additionalProperties (false; objects with
 * properties are closed either way), items, minItems, maxItems,
 * minLength, maxLength, enum and const (scalars); title, description,
 * $schema, $id, default and examples are ignored. Anything else is
 * KS_ERR_UNSUPPORTED naming the keyword. A schema with neither type nor
 * enum accepts any JSON value; {"type":"object"} without properties any
 * object. Each property appears at most once, in any order. */
#ifndef KS_JSON_SCHEMA_H
#define KS_JSON_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"
#include "runtime/tokenizer.h"

typedef struct ks_json_schema ks_json_schema;
typedef struct ks_json_state ks_json_state;

/* Compiles |text| (a JSON schema, NUL-terminated). KS_ERR_INVALID_ARG for
 * text that is not JSON, KS_ERR_UNSUPPORTED for a keyword or shape outside
 * the subset; the message names it. On failure *out is NULL. */
ks_status ks_json_schema_create(const char *text, ks_json_schema **out);
void      ks_json_schema_destroy(ks_json_schema *js);  /* NULL: no-op */

/* A recognizer state at the start of a value. */
ks_status ks_json_state_create(const ks_json_schema *js, ks_json_state **out);
void      ks_json_state_destroy(ks_json_state *st);
void      ks_json_state_reset(ks_json_state *st);
/* Feeds |n| bytes; false (and the state is unspecified) when the text is
 * no longer a valid prefix. */
bool      ks_json_state_feed(ks_json_state *st, const char *bytes, size_t n);
/* The text fed so far is a whole value of the schema. */
bool      ks_json_state_complete(const ks_json_state *st);

/* The token mask: a trie of the vocabulary's pieces (the bytes
 * ks_tokenizer_piece gives) walked from the recognizer's state, shared
 * prefixes once. Tokens with an empty piece (control, unused) are never
 * allowed; end-of-generation tokens only when the value is complete. */
typedef struct ks_json_mask ks_json_mask;

ks_status ks_json_mask_create(const ks_json_schema *js,
                              const ks_tokenizer *tok, uint32_t n_vocab,
                              ks_json_mask **out);
void      ks_json_mask_destroy(ks_json_mask *m);  /* NULL: no-op */
void      ks_json_mask_reset(ks_json_mask *m);    /* back to the start */
/* Copies |logits| to |out| with every disallowed token at -inf. *done is
 * set (and |out| untouched) when the value is complete and nothing but
 * end-of-generation may follow. KS_ERR_UNSUPPORTED when no token of the
 * vocabulary continues the text. */
ks_status ks_json_mask_apply(ks_json_mask *m, const float *logits,
                             float *out, bool *done);
/* Advances over the piece of |token| (one the mask allowed). */
ks_status ks_json_mask_accept(ks_json_mask *m, int32_t token);

#endif
