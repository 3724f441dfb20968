/* Structured output (runtime/json_schema.c): the schema compiler's subset
 * and its errors, the recognizer's answers for valid and invalid prefixes
 * of every construct, and the token mask over a small hand-made
 * vocabulary. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "runtime/json_schema.h"
#include "runtime/synth.h"
#include "runtime/tokenizer.h"

enum { PREFIX, WHOLE, BAD };

/* Feeds |text| to a fresh recognizer of |schema| and checks the answer:
 * a valid prefix that is not a whole value, a whole value, or rejected. */
static void
expect(const char *schema, const char *text, int want)
{
    ks_json_schema *js = NULL;
    ks_json_state *st = NULL;
    bool ok;

    ck_assert_msg(ks_json_schema_create(schema, &js) == KS_OK, "%s: %s", schema,
                  ks_last_error());
    ck_assert_int_eq(ks_json_state_create(js, &st), KS_OK);
    ok = ks_json_state_feed(st, text, strlen(text));
    if (want == BAD)
        ck_assert_msg(!ok, "%s accepted %s", schema, text);
    else {
        ck_assert_msg(ok, "%s rejected %s", schema, text);
        ck_assert_msg(ks_json_state_complete(st) == (want == WHOLE),
                      "%s: %s should %sbe whole", schema, text, want == WHOLE ? "" : "not ");
    }
    /* byte by byte gives the same answer */
    ks_json_state_reset(st);
    ok = true;
    for (size_t i = 0; ok && text[i]; i++)
        ok = ks_json_state_feed(st, text + i, 1);
    ck_assert_int_eq(ok, want != BAD);
    ks_json_state_destroy(st);
    ks_json_schema_destroy(js);
}

static const char *k_person =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"maxLength\":5},"
    "\"age\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]},\"maxItems\":2},"
    "\"nick\":{\"type\":\"string\",\"minLength\":2}},"
    "\"required\":[\"name\",\"age\"],\"title\":\"ignored\"}";

START_TEST(object_required_and_order)
{
    expect(k_person, "{\"name\":\"bob\",\"age\":42}", WHOLE);
    expect(k_person, "{\"age\":-3,\"name\":\"\",\"tags\":[\"a\",\"b\"]}", WHOLE);
    expect(k_person, "{\"name\":\"bob\",\"age\":0,\"tags\":[]}", WHOLE);
    expect(k_person, "{\"na", PREFIX);
    expect(k_person, "{\"name\":\"bob\",\"age\":4", PREFIX);
    expect(k_person, "{", PREFIX);
    expect(k_person, "", PREFIX);
    expect(k_person, "{}", BAD);                      /* required missing */
    expect(k_person, "{\"name\":\"bob\"}", BAD);
    expect(k_person, "{\"nam\"", BAD);                /* undeclared name */
    expect(k_person, "{\"x\":1", BAD);
    expect(k_person, "{\"name\":\"a\",\"name\"", BAD); /* twice */
    expect(k_person, "{ \"name\"", BAD);              /* no whitespace */
    expect(k_person, "{\"name\" :", BAD);
    expect(k_person, "{\"name\":\"bob\",}", BAD);
    expect(k_person, "{\"name\":\"bob\",\"age\":1}x", BAD);
    expect(k_person, "[", BAD);
}
END_TEST

START_TEST(strings)
{
    expect(k_person, "{\"name\":\"abcde\"", PREFIX);
    expect(k_person, "{\"name\":\"abcdef", BAD);      /* maxLength 5 */
    expect(k_person, "{\"name\":\"\\n\\\"\\u00e9x\\/\"", PREFIX);
    expect(k_person, "{\"name\":\"h\xc3\xa9\"", PREFIX);
    expect(k_person, "{\"nick\":\"a\"", BAD);          /* minLength 2 */
    expect(k_person, "{\"nick\":\"ab\"", PREFIX);
    expect(k_person, "{\"name\":\"\xc3\x28", BAD);     /* bad UTF-8 */
    expect(k_person, "{\"name\":\"\xc0\xaf", BAD);     /* overlong */
    expect(k_person, "{\"name\":\"\xed\xa0\x80", BAD); /* surrogate */
    expect(k_person, "{\"name\":\"\xe2\x82", PREFIX);  /* half a character */
    expect(k_person, "{\"name\":\"\xe2\x82\"", BAD);
    expect(k_person, "{\"name\":\"\\ud800", BAD);
    expect(k_person, "{\"name\":\"\\x", BAD);
    expect(k_person, "{\"name\":\"a\nb", BAD);         /* raw control */
    expect("{\"type\":\"string\"}", "\"\"", WHOLE);
    expect("{\"type\":\"string\"}", "\"ab", PREFIX);
}
END_TEST

START_TEST(numbers)
{
    const char *num = "{\"type\":\"number\"}", *in = "{\"type\":\"integer\"}";

    expect(num, "-0.5e+10", WHOLE);
    expect(num, "12.25", WHOLE);
    expect(num, "0", WHOLE);
    expect(num, "1E3", WHOLE);
    expect(num, "1.", PREFIX);
    expect(num, "-", PREFIX);
    expect(num, "1e", PREFIX);
    expect(num, "1e-", PREFIX);
    expect(num, "01", BAD);
    expect(num, "--1", BAD);
    expect(num, ".5", BAD);
    expect(num, "1.e5", BAD);
    expect(num, "+1", BAD);
    expect(num, "123456789012345", WHOLE);
    expect(num, "1234567890123456", BAD);    /* 15 digits at most: exact doubles */
    expect(num, "0.1234567890123456", WHOLE);
    expect(num, "0.12345678901234567", BAD);
    expect(num, "1e1234", BAD);
    expect(in, "-12", WHOLE);
    expect(in, "1.5", BAD);
    expect(in, "1e5", BAD);
}
END_TEST

START_TEST(literals_and_enum)
{
    const char *en = "{\"enum\":[\"red\",\"green\",1,10.5,null,false]}";

    expect("{\"type\":\"boolean\"}", "true", WHOLE);
    expect("{\"type\":\"boolean\"}", "fal", PREFIX);
    expect("{\"type\":\"boolean\"}", "tx", BAD);
    expect("{\"type\":\"boolean\"}", "null", BAD);
    expect("{\"type\":\"null\"}", "null", WHOLE);
    expect(en, "\"red\"", WHOLE);
    expect(en, "\"gr", PREFIX);
    expect(en, "\"blue", BAD);
    expect(en, "1", WHOLE);
    expect(en, "10", PREFIX);
    expect(en, "10.5", WHOLE);
    expect(en, "2", BAD);
    expect(en, "nul", PREFIX);
    expect(en, "true", BAD);
    expect(en, "\"red\"x", BAD);
    expect("{\"const\":\"x\"}", "\"x\"", WHOLE);
    expect("{\"const\":\"x\"}", "\"y\"", BAD);
}
END_TEST

START_TEST(nesting_and_any)
{
    const char *nest =
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"properties\":"
        "{\"b\":{\"type\":\"array\",\"minItems\":1,\"items\":{\"type\":\"object\","
        "\"properties\":{\"c\":{\"type\":\"boolean\"}},\"required\":[\"c\"]}}},"
        "\"required\":[\"b\"]}},\"required\":[\"a\"]}";
    const char *arr = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},"
                      "\"minItems\":1,\"maxItems\":2}";

    expect(nest, "{\"a\":{\"b\":[{\"c\":true},{\"c\":false}]}}", WHOLE);
    expect(nest, "{\"a\":{\"b\":[{\"c\":true}]", PREFIX);
    expect(nest, "{\"a\":{\"b\":[]", BAD);    /* minItems */
    expect(nest, "{\"a\":{\"b\":[{}", BAD);   /* c required */
    expect(nest, "{\"a\":{\"b\":[{\"c\":1", BAD);
    expect(arr, "[1,2]", WHOLE);
    expect(arr, "[1,2,", BAD);                /* maxItems */
    expect(arr, "[]", BAD);
    expect(arr, "[1,]", BAD);
    expect("{}", "[1,{\"x\":[true,null,\"s\\u00e9\"]},-2.5]", WHOLE);
    expect("{}", "\"s\"", WHOLE);
    expect("{}", "{\"\":{}}", WHOLE);
    expect("{}", "{\"a\"1", BAD);
    expect("{}", "[1 ]", BAD);
    expect("{\"type\":\"object\"}", "{\"k\":[1,2],\"j\":{}}", WHOLE);
    expect("{\"type\":\"object\"}", "[1]", BAD);
    expect("{\"type\":\"object\",\"additionalProperties\":false}", "{}", WHOLE);
    expect("{\"type\":\"object\",\"additionalProperties\":false}", "{\"", BAD);
    expect("{\"type\":\"object\",\"properties\":{\"x\":true}}", "{\"x\":[1]}", WHOLE);
    expect("{\"type\":\"object\",\"properties\":{\"x\":{}}}", "{}", WHOLE);
}
END_TEST

static void
expect_error(const char *schema, ks_status want, const char *words)
{
    ks_json_schema *js = (ks_json_schema *)1;

    ck_assert_int_eq(ks_json_schema_create(schema, &js), want);
    ck_assert_ptr_null(js);
    ck_assert_msg(strstr(ks_last_error(), words), "%s: '%s' lacks '%s'", schema,
                  ks_last_error(), words);
    ck_assert_int_eq(ks_json_schema_check(schema), want);
}

START_TEST(schema_errors)
{
    expect_error("{\"type\":\"string\",\"pattern\":\"x\"}", KS_ERR_UNSUPPORTED, "\"pattern\"");
    expect_error("{\"anyOf\":[]}", KS_ERR_UNSUPPORTED, "\"anyOf\"");
    expect_error("{\"type\":[\"string\",\"null\"]}", KS_ERR_UNSUPPORTED, "list of types");
    expect_error("{\"type\":\"date\"}", KS_ERR_UNSUPPORTED, "\"date\"");
    expect_error("{\"type\":\"object\",\"properties\":{\"y\":{}},\"required\":[\"x\"]}",
                 KS_ERR_UNSUPPORTED, "\"x\"");
    expect_error("{\"type\":\"object\",\"additionalProperties\":true}", KS_ERR_UNSUPPORTED,
                 "additionalProperties");
    expect_error("{\"enum\":[]}", KS_ERR_UNSUPPORTED, "empty enum");
    expect_error("{\"enum\":[[1]]}", KS_ERR_UNSUPPORTED, "enum");
    expect_error("{\"type\":\"string\",\"maxLength\":-1}", KS_ERR_UNSUPPORTED, "maxLength");
    expect_error("{\"type\":", KS_ERR_INVALID_ARG, "not valid JSON");
    expect_error("{} x", KS_ERR_INVALID_ARG, "after the schema");
    expect_error("[]", KS_ERR_UNSUPPORTED, "must be a JSON object");
    ck_assert_int_eq(ks_json_schema_check(k_person), KS_OK);
    ck_assert_int_eq(ks_json_schema_check(NULL), KS_ERR_INVALID_ARG);
}
END_TEST

/* A vocabulary of JSON fragments: the mask allows exactly the tokens whose
 * whole text continues the value. */
static ks_tokenizer *
fragment_tokenizer(void)
{
    static const char *const toks[] = {
        "<unk>", "<s>", "</s>", "{", "}", "\"", "a", "\":", "1", "12", "x", "{\"",
        "a\":1}", "\xe2\x96\x81{",
    };
    enum { N = sizeof toks / sizeof toks[0] };
    int32_t types[N];
    ks_tok_vocab v = { .model = KS_TOK_MODEL_SPM, .n_tokens = N, .tokens = toks,
                       .types = types, .bos = 1, .eos = 2, .unk = 0, .eot = -1,
                       .eom = -1, .pad = -1, .sep = -1 };
    ks_tokenizer *t = NULL;

    for (int i = 0; i < N; i++)
        types[i] = i == 0 ? KS_TOK_UNKNOWN : i < 3 ? KS_TOK_CONTROL : KS_TOK_NORMAL;
    ck_assert_msg(ks_tokenizer_create_from_vocab(&v, &t) == KS_OK, "%s", ks_last_error());
    return t;
}

/* The allowed set after apply, as a bit mask of token ids. */
static unsigned
allowed(ks_json_mask *m, uint32_t n, bool *done)
{
    float in[16], out[16];
    unsigned bits = 0;

    for (uint32_t i = 0; i < n; i++) {
        in[i] = (float)i;
        out[i] = 99.0f;
    }
    ck_assert_msg(ks_json_mask_apply(m, in, out, done) == KS_OK, "%s", ks_last_error());
    if (*done)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        if (out[i] != -INFINITY) {
            ck_assert_float_eq(out[i], in[i]);  /* allowed logits are kept */
            bits |= 1u << i;
        }
    }
    return bits;
}

#define B(i) (1u << (i))

START_TEST(mask_over_trie)
{
    ks_tokenizer *t = fragment_tokenizer();
    uint32_t n = ks_tokenizer_n_vocab(t);
    ks_json_schema *js, *ji;
    ks_json_mask *m, *mi;
    bool done;

    ck_assert_int_eq(ks_json_schema_create("{\"type\":\"object\",\"properties\":{\"a\":"
                                           "{\"type\":\"integer\"}},\"required\":[\"a\"]}",
                                           &js), KS_OK);
    ck_assert_int_eq(ks_json_mask_create(js, t, n, &m), KS_OK);
    ck_assert_uint_eq(allowed(m, n, &done), B(3) | B(11));
    ck_assert(!done);
    ck_assert_int_eq(ks_json_mask_accept(m, 11), KS_OK);   /* {" */
    ck_assert_uint_eq(allowed(m, n, &done), B(6) | B(12));
    ck_assert_int_eq(ks_json_mask_accept(m, 6), KS_OK);    /* a */
    ck_assert_uint_eq(allowed(m, n, &done), B(5) | B(7));  /* " or ": */
    ck_assert_int_eq(ks_json_mask_accept(m, 7), KS_OK);    /* ": */
    ck_assert_uint_eq(allowed(m, n, &done), B(8) | B(9));
    ck_assert_int_eq(ks_json_mask_accept(m, 9), KS_OK);    /* 12 */
    ck_assert_uint_eq(allowed(m, n, &done), B(4) | B(8) | B(9));
    ck_assert_int_eq(ks_json_mask_accept(m, 4), KS_OK);    /* } */
    allowed(m, n, &done);
    ck_assert(done);                                        /* nothing may follow */
    ck_assert_int_eq(ks_json_mask_accept(m, 8), KS_ERR_INTERNAL);
    ks_json_mask_reset(m);
    ck_assert_uint_eq(allowed(m, n, &done), B(3) | B(11));
    ck_assert_int_eq(ks_json_mask_accept(m, 12), KS_ERR_INTERNAL);

    /* a whole value that may go on: end-of-generation joins the digits */
    ck_assert_int_eq(ks_json_schema_create("{\"type\":\"integer\"}", &ji), KS_OK);
    ck_assert_int_eq(ks_json_mask_create(ji, t, n, &mi), KS_OK);
    ck_assert_uint_eq(allowed(mi, n, &done), B(8) | B(9));
    ck_assert_int_eq(ks_json_mask_accept(mi, 8), KS_OK);
    ck_assert_uint_eq(allowed(mi, n, &done), B(2) | B(8) | B(9));

    ks_json_mask_destroy(mi);
    ks_json_schema_destroy(ji);
    ks_json_mask_destroy(m);
    ks_json_schema_destroy(js);
    ks_tokenizer_destroy(t);
}
END_TEST

START_TEST(mask_dead_end)
{
    ks_tokenizer *t = fragment_tokenizer();
    uint32_t n = ks_tokenizer_n_vocab(t);
    ks_json_schema *js;
    ks_json_mask *m;
    float in[16] = { 0 }, out[16];
    bool done;

    /* no token of this vocabulary starts with '[' */
    ck_assert_int_eq(ks_json_schema_create("{\"type\":\"array\"}", &js), KS_OK);
    ck_assert_int_eq(ks_json_mask_create(js, t, n, &m), KS_OK);
    ck_assert_int_eq(ks_json_mask_apply(m, in, out, &done), KS_ERR_UNSUPPORTED);
    ck_assert(strstr(ks_last_error(), "no token"));
    ks_json_mask_destroy(m);
    ks_json_schema_destroy(js);
    ks_tokenizer_destroy(t);
}
END_TEST


/* The mask against brute force: along random walks through several
 * schemas, the allowed set equals the tokens whose piece, appended to the
 * text so far, a fresh recognizer accepts; end-of-generation exactly when
 * the text is whole. Covers the trie walk and the in-string shortcut
 * (strings with and without a maxLength near its end). */
START_TEST(mask_matches_brute_force)
{
    static const char *const toks[] = {
        "<unk>", "<s>", "</s>", "{", "}", "\"", "a", "ab", "\":", ":", "1", "12", "-",
        ".5", "e3", ",", "[", "]", "\",", "\"}", "\"]", "\\", "\\n", "\\u00", "e9", "u",
        "\xc3", "\xa9", "\xc3\xa9", "\xe2\x96\x81x", "x\"", "tr", "ue", "null", "{\"",
        "s\":\"", "\"s\":", "0", "\"n\":", "\"t\":", "red", "\"red\"", "]}", "fals", "e",
    };
    enum { N = sizeof toks / sizeof toks[0] };
    static const char *const schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"maxLength\":6},"
        "\"n\":{\"type\":\"number\"},\"t\":{\"type\":\"array\",\"items\":{\"enum\":"
        "[\"red\",true,null]},\"maxItems\":3}},\"required\":[\"s\"]}",
        "{\"type\":\"object\"}",
        "{}",
        "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":2}}",
    };
    int32_t types[N];
    ks_tok_vocab v = { .model = KS_TOK_MODEL_SPM, .n_tokens = N, .tokens = toks,
                       .types = types, .bos = 1, .eos = 2, .unk = 0, .eot = -1,
                       .eom = -1, .pad = -1, .sep = -1 };
    ks_tokenizer *t = NULL;
    uint64_t rng = 12345;
    unsigned checked = 0;

    for (int i = 0; i < N; i++)
        types[i] = i == 0 ? KS_TOK_UNKNOWN : i < 3 ? KS_TOK_CONTROL : KS_TOK_NORMAL;
    ck_assert_int_eq(ks_tokenizer_create_from_vocab(&v, &t), KS_OK);
    for (size_t si = 0; si < sizeof schemas / sizeof schemas[0]; si++) {
        ks_json_schema *js;
        ks_json_mask *m;
        ck_assert_int_eq(ks_json_schema_create(schemas[si], &js), KS_OK);
        ck_assert_int_eq(ks_json_mask_create(js, t, N, &m), KS_OK);
        for (int walk = 0; walk < 60; walk++) {
            char text[512];
            size_t len = 0;
            ks_json_mask_reset(m);
            for (int step = 0; step < 40; step++) {
                float in[N], out[N];
                int32_t pick[N];
                int n_pick = 0;
                bool done, whole;
                ks_json_state *ref;
                for (int i = 0; i < N; i++)
                    in[i] = 0.0f;
                ck_assert_int_eq(ks_json_state_create(js, &ref), KS_OK);
                ck_assert(ks_json_state_feed(ref, text, len));
                whole = ks_json_state_complete(ref);
                ks_json_state_destroy(ref);
                bool brute[N];
                int n_brute = 0;
                ks_status st;
                for (int i = 3; i < N; i++) {
                    char piece[64];
                    size_t pl = ks_tokenizer_piece(t, i, piece, sizeof piece);
                    ck_assert_int_eq(ks_json_state_create(js, &ref), KS_OK);
                    brute[i] = ks_json_state_feed(ref, text, len) &&
                               ks_json_state_feed(ref, piece, pl);
                    ks_json_state_destroy(ref);
                    n_brute += brute[i];
                }
                st = ks_json_mask_apply(m, in, out, &done);
                if (st != KS_OK) {  /* a dead end of this small vocabulary */
                    ck_assert_int_eq(st, KS_ERR_UNSUPPORTED);
                    ck_assert_int_eq(n_brute, 0);
                    ck_assert(!whole);
                    break;
                }
                if (done) {
                    ck_assert(whole);
                    ck_assert_int_eq(n_brute, 0);
                    break;
                }
                for (int i = 3; i < N; i++) {
                    ck_assert_msg(brute[i] == (out[i] == 0.0f), "schema %zu after '%.*s': "
                                  "token '%s' brute force %d, mask %d", si, (int)len, text,
                                  toks[i], brute[i], out[i] == 0.0f);
                    if (brute[i] && len + strlen(toks[i]) < sizeof text)
                        pick[n_pick++] = i;
                }
                ck_assert_int_eq(out[2] == 0.0f, whole);  /* </s> */
                checked++;
                if (!n_pick)
                    break;
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                int32_t tk = pick[(rng >> 33) % (uint64_t)n_pick];
                len += ks_tokenizer_piece(t, tk, text + len, sizeof text - len);
                ck_assert_int_eq(ks_json_mask_accept(m, tk), KS_OK);
            }
        }
        ks_json_mask_destroy(m);
        ks_json_schema_destroy(js);
    }
    ck_assert_uint_gt(checked, 500);
    ks_tokenizer_destroy(t);
}
END_TEST


typedef struct collect {
    char   text[256];
    size_t n;
} collect;

static bool
collect_piece(void *user, int32_t token, const char *piece, size_t len)
{
    collect *c = user;
    (void)token;
    if (c->n + len < sizeof c->text) {
        memcpy(c->text + c->n, piece, len);
        c->n += len;
        c->text[c->n] = 0;
    }
    return true;
}

/* Generation on a synthetic model: a value that is whole but may go on
 * ("1" of enum [1, 12]) lets end-of-generation through, and sampling it
 * ends the call at KS_STOP_EOG even with ignore_eog (the value cannot take
 * it); the output is the value. Speculation with a schema is refused, an
 * unsupported schema fails before anything is appended. */
START_TEST(generate_on_synthetic_model)
{
    char dir[] = "/tmp/kestrel-test-json-XXXXXX", path[256];
    ks_synth_params sp = { .arch = "llama", .n_embd = 32, .n_layers = 1, .n_head = 4,
                           .n_ff = 48, .n_vocab = 300, .n_ctx = 256,
                           .wtype = KS_QUANT_Q8_0, .seed = 3 };
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1, .no_governor = true };
    ks_session_params ssp = { .n_ctx = 128 };
    ks_runtime *rt;
    ks_model *m;
    ks_session *s;
    int32_t bos = 1;
    int n_one = 0;

    ck_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    ck_assert_int_eq(ks_synth_write(&sp, path), KS_OK);
    ck_assert_int_eq(ks_runtime_create(&rp, &rt), KS_OK);
    ck_assert_int_eq(ks_model_load(rt, path, NULL, &m), KS_OK);
    ck_assert_int_eq(ks_session_create(m, &ssp, &s), KS_OK);
    for (uint64_t seed = 1; seed <= 40; seed++) {
        collect c = { .n = 0 };
        ks_generate_params gp = { .prompt = &bos, .n_prompt = 1, .n_predict = 20,
                                  .on_token = collect_piece, .user = &c,
                                  .ignore_eog = true, .json_schema = "{\"enum\":[1,12]}" };
        gp.sampling.temp = 1.0f;
        gp.sampling.seed = seed;
        ck_assert_int_eq(ks_session_truncate(s, 0), KS_OK);
        ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "seed %d: %s", (int)seed,
                      ks_last_error());
        ck_assert_int_eq(gp.stop, KS_STOP_EOG);
        ck_assert_msg(strcmp(c.text, "1") == 0 || strcmp(c.text, "12") == 0, "%s", c.text);
        ck_assert_uint_eq(ks_session_n_past(s), 1 + gp.n_out);
        n_one += strcmp(c.text, "1") == 0;
    }
    ck_assert_int_gt(n_one, 0);  /* end-of-generation was sampled */
    {
        ks_generate_params gp = { .prompt = &bos, .n_prompt = 1, .n_predict = 4,
                                  .spec = KS_SPEC_LOOKUP, .json_schema = "{}" };
        ck_assert_int_eq(ks_session_truncate(s, 0), KS_OK);
        ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_UNSUPPORTED);
        ck_assert(strstr(ks_last_error(), "json_schema"));
        gp.spec = KS_SPEC_OFF;
        gp.json_schema = "{\"type\":\"string\",\"format\":\"email\"}";
        ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_UNSUPPORTED);
        ck_assert(strstr(ks_last_error(), "\"format\""));
        ck_assert_uint_eq(ks_session_n_past(s), 0);
    }
    ks_session_destroy(s);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *
json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("recognizer");

    tcase_add_test(tc, object_required_and_order);
    tcase_add_test(tc, strings);
    tcase_add_test(tc, numbers);
    tcase_add_test(tc, literals_and_enum);
    tcase_add_test(tc, nesting_and_any);
    tcase_add_test(tc, schema_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("mask");
    tcase_add_test(tc, mask_over_trie);
    tcase_add_test(tc, mask_dead_end);
    tcase_add_test(tc, mask_matches_brute_force);
    tcase_add_test(tc, generate_on_synthetic_model);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(json_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
