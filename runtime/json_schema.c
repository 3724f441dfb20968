/* Structured output: JSON-schema subset -> pushdown recognizer -> token
 * mask over a trie of the vocabulary's pieces. See json_schema.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "kestrel/session.h"
#include "runtime/json_schema.h"

#define JS_MAX_DEPTH 32   /* frames: nesting of the output */
#define JS_MAX_SET   64   /* properties per object, enum values */
#define JS_MAX_PARSE 64   /* nesting of the schema text */
#define INT_DIGITS   15  /* below 2^53: exact as a double */
#define FRAC_DIGITS  16
#define EXP_DIGITS   3

/* ---- a small JSON reader for the schema text ---- */

typedef struct jv {
    char        t;        /* 'o' 'a' 's' 'n' 't' 'f' 'z' (null) */
    const char *raw;      /* the value's source text */
    size_t      raw_len;
    char       *str;      /* 's': decoded, NUL-terminated */
    size_t      str_len;
    uint32_t    n;        /* 'o', 'a': members */
    struct jv  *kids;
    char      **keys;     /* 'o': decoded member names */
} jv;

typedef struct reader {
    const char *s, *p;
} reader;

static void
jv_free(jv *v)
{
    if (!v)
        return;
    for (uint32_t i = 0; i < v->n; i++) {
        jv_free(&v->kids[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->kids);
    free(v->keys);
    free(v->str);
}

static void
skip_ws(reader *r)
{
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
        r->p++;
}

static ks_status
bad(reader *r, const char *what)
{
    return ks_error(KS_ERR_INVALID_ARG, "json schema: not valid JSON at byte %zu: %s",
                    (size_t)(r->p - r->s), what);
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t
put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static ks_status
read_u4(reader *r, uint32_t *out)
{
    uint32_t c = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)r->p[i]);
        if (h < 0)
            return bad(r, "bad \\u escape");
        c = c * 16 + (uint32_t)h;
    }
    r->p += 4;
    *out = c;
    return KS_OK;
}

/* At the opening quote. */
static ks_status
read_string(reader *r, char **out, size_t *out_len)
{
    const char *q = r->p + 1;
    size_t cap = 0, n = 0;
    char *o;
    ks_status st;

    while (*q && *q != '"') {  /* an upper bound on the decoded size */
        if (*q == '\\' && q[1])
            q++;
        q++;
        cap++;
    }
    if (!*q)
        return bad(r, "unterminated string");
    if (!(o = malloc(cap * 4 + 1)))
        return ks_error(KS_ERR_NOMEM, "json schema: no memory");
    r->p++;
    while (*r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c < 0x20) {
            free(o);
            return bad(r, "control character in a string");
        }
        if (c != '\\') {
            o[n++] = (char)c;
            r->p++;
            continue;
        }
        r->p++;
        switch (*r->p) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            uint32_t c1 = 0, c2 = 0;
            r->p++;
            if ((st = read_u4(r, &c1)) != KS_OK) {
                free(o);
                return st;
            }
            if (c1 >= 0xD800 && c1 < 0xDC00 && r->p[0] == '\\' && r->p[1] == 'u') {
                r->p += 2;
                if ((st = read_u4(r, &c2)) != KS_OK) {
                    free(o);
                    return st;
                }
                if (c2 < 0xDC00 || c2 > 0xDFFF) {
                    free(o);
                    return bad(r, "bad surrogate pair");
                }
                c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
            } else if (c1 >= 0xD800 && c1 < 0xE000) {
                free(o);
                return bad(r, "lone surrogate");
            }
            n += put_utf8(o + n, c1);
            continue;
        }
        default:
            free(o);
            return bad(r, "bad escape");
        }
        r->p++;
    }
    r->p++;
    o[n] = 0;
    *out = o;
    *out_len = n;
    return KS_OK;
}

static ks_status
read_value(reader *r, jv *v, int depth)
{
    ks_status st;
    uint32_t cap = 0;

    memset(v, 0, sizeof(*v));
    skip_ws(r);
    v->raw = r->p;
    if (depth > JS_MAX_PARSE)
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: nested deeper than %d",
                        JS_MAX_PARSE);
    if (*r->p == '{' || *r->p == '[') {
        bool obj = *r->p == '{';
        char close = obj ? '}' : ']';
        v->t = obj ? 'o' : 'a';
        r->p++;
        skip_ws(r);
        if (*r->p == close) {
            r->p++;
            goto out;
        }
        for (;;) {
            char *key = NULL;
            size_t klen;
            if (v->n == cap) {
                uint32_t nc = cap ? cap * 2 : 4;
                jv *k = realloc(v->kids, nc * sizeof(*k));
                char **ks = k ? realloc(v->keys, nc * sizeof(*ks)) : NULL;
                if (k)
                    v->kids = k;
                if (!ks)
                    return ks_error(KS_ERR_NOMEM, "json schema: no memory");
                v->keys = ks;
                cap = nc;
            }
            skip_ws(r);
            if (obj) {
                if (*r->p != '"')
                    return bad(r, "expected a member name");
                if ((st = read_string(r, &key, &klen)) != KS_OK)
                    return st;
                skip_ws(r);
                if (*r->p != ':') {
                    free(key);
                    return bad(r, "expected ':'");
                }
                r->p++;
            }
            v->keys[v->n] = key;
            st = read_value(r, &v->kids[v->n], depth + 1);
            v->n++;
            if (st != KS_OK)
                return st;
            skip_ws(r);
            if (*r->p == ',') {
                r->p++;
                continue;
            }
            if (*r->p == close) {
                r->p++;
                break;
            }
            return bad(r, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        goto out;
    }
    if (*r->p == '"') {
        v->t = 's';
        if ((st = read_string(r, &v->str, &v->str_len)) != KS_OK)
            return st;
        goto out;
    }
    if (strncmp(r->p, "true", 4) == 0 || strncmp(r->p, "null", 4) == 0) {
        v->t = *r->p == 't' ? 't' : 'z';
        r->p += 4;
        goto out;
    }
    if (strncmp(r->p, "false", 5) == 0) {
        v->t = 'f';
        r->p += 5;
        goto out;
    }
    {
        /* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
        const char *p = r->p;
        if (*p == '-')
            p++;
        if (*p == '0')
            p++;
        else if (*p >= '1' && *p <= '9')
            while (*p >= '0' && *p <= '9')
                p++;
        else
            return bad(r, "expected a value");
        if (*p == '.') {
            if (!(*++p >= '0' && *p <= '9'))
                return bad(r, "bad number");
            while (*p >= '0' && *p <= '9')
                p++;
        }
        if (*p == 'e' || *p == 'E') {
            p++;
            if (*p == '+' || *p == '-')
                p++;
            if (!(*p >= '0' && *p <= '9'))
                return bad(r, "bad number");
            while (*p >= '0' && *p <= '9')
                p++;
        }
        v->t = 'n';
        r->p = p;
    }
out:
    v->raw_len = (size_t)(r->p - v->raw);
    return KS_OK;
}

/* ---- the compiled schema ---- */

enum {
    N_ANY, N_OBJECT, N_OBJANY, N_ARRAY, N_STRING, N_NUMBER, N_INTEGER, N_LIT,
};

typedef struct jnode {
    uint8_t   kind;
    uint32_t  n;        /* N_OBJECT: properties; N_LIT: literals */
    char    **text;     /* property names / literal texts */
    size_t   *len;
    uint16_t *prop;     /* N_OBJECT: the node of each property */
    uint64_t  required;
    uint16_t  items;    /* N_ARRAY */
    uint32_t  min_n, max_n; /* items or string characters */
} jnode;

struct ks_json_schema {
    jnode   *nodes;
    uint32_t n, cap;
    uint16_t root;
};

/* Fixed nodes every schema has, for values of any type. */
enum { G_ANY, G_LIT, G_OBJ, G_ARR, G_STR, G_NUM, G_FIXED };

static ks_status
new_node(ks_json_schema *js, uint8_t kind, uint16_t *out)
{
    if (js->n == js->cap) {
        uint32_t nc = js->cap ? js->cap * 2 : 16;
        jnode *nn;
        if (nc > 60000)
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: too many subschemas");
        if (!(nn = realloc(js->nodes, nc * sizeof(*nn))))
            return ks_error(KS_ERR_NOMEM, "json schema: no memory");
        js->nodes = nn;
        js->cap = nc;
    }
    memset(&js->nodes[js->n], 0, sizeof(jnode));
    js->nodes[js->n].kind = kind;
    js->nodes[js->n].max_n = UINT32_MAX;
    *out = (uint16_t)js->n++;
    return KS_OK;
}

static ks_status
add_text(jnode *nd, const char *s, size_t len)
{
    char **t = realloc(nd->text, (nd->n + 1) * sizeof(*t));
    size_t *l;
    if (t)
        nd->text = t;
    l = t ? realloc(nd->len, (nd->n + 1) * sizeof(*l)) : NULL;
    if (!l)
        return ks_error(KS_ERR_NOMEM, "json schema: no memory");
    nd->len = l;
    if (!(nd->text[nd->n] = malloc(len + 1)))
        return ks_error(KS_ERR_NOMEM, "json schema: no memory");
    memcpy(nd->text[nd->n], s, len);
    nd->text[nd->n][len] = 0;
    nd->len[nd->n] = len;
    nd->n++;
    return KS_OK;
}

static const jv *
member(const jv *o, const char *key)
{
    for (uint32_t i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return &o->kids[i];
    return NULL;
}

static ks_status
get_count(const jv *o, const char *key, uint32_t *out)
{
    const jv *v = member(o, key);
    char *end;
    double d;

    if (!v)
        return KS_OK;
    d = v->t == 'n' ? strtod(v->raw, &end) : -1;
    if (d < 0 || d != floor(d) || d > 1e9)
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"%s\" must be a "
                        "non-negative integer below 1e9", key);
    *out = (uint32_t)d;
    return KS_OK;
}

static const char *const k_keywords[] = {
    "type", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "minLength", "maxLength", "enum", "const",
    "title", "description", "$schema", "$id", "default", "examples",
};

static ks_status compile(ks_json_schema *js, const jv *s, int depth, uint16_t *out);

static ks_status
compile_enum(ks_json_schema *js, const jv *vals, uint32_t n, uint16_t *out)
{
    ks_status st;
    uint16_t id;

    if (n == 0)
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: an empty enum accepts nothing");
    if (n > JS_MAX_SET)
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: enum of %u values "
                        "(at most %d)", n, JS_MAX_SET);
    if ((st = new_node(js, N_LIT, &id)) != KS_OK)
        return st;
    for (uint32_t i = 0; i < n; i++) {
        const jv *v = &vals[i];
        if (v->t == 'o' || v->t == 'a')
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: enum and const "
                            "values must be strings, numbers, booleans or null");
        /* the literal is the value's own compact source text */
        if ((st = add_text(&js->nodes[id], v->raw, v->raw_len)) != KS_OK)
            return st;
    }
    *out = id;
    return KS_OK;
}

static ks_status
compile_object(ks_json_schema *js, const jv *s, int depth, uint16_t *out)
{
    const jv *props = member(s, "properties"), *req = member(s, "required");
    const jv *add = member(s, "additionalProperties");
    ks_status st;
    uint16_t id;

    if (add && add->t != 'f')
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: only "
                        "\"additionalProperties\": false is supported");
    if (props && props->t != 'o')
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"properties\" must be an object");
    if (req && req->t != 'a')
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"required\" must be an array");
    if (!props || props->n == 0) {
        if (req && req->n)
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"required\" "
                            "names properties the object does not declare");
        if (add) {  /* a closed object without properties: {} only */
            if ((st = new_node(js, N_OBJECT, &id)) != KS_OK)
                return st;
            *out = id;
            return KS_OK;
        }
        *out = G_OBJ;
        return KS_OK;
    }
    if (props->n > JS_MAX_SET)
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: %u properties in one "
                        "object (at most %d)", props->n, JS_MAX_SET);
    if ((st = new_node(js, N_OBJECT, &id)) != KS_OK)
        return st;
    for (uint32_t i = 0; i < props->n; i++) {
        const char *name = props->keys[i];
        uint16_t *pn;
        uint16_t kid;
        for (const char *c = name; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
                return ks_error(KS_ERR_UNSUPPORTED, "json schema: property name "
                                "\"%s\" needs escaping (not supported)", name);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(props->keys[j], name) == 0)
                return ks_error(KS_ERR_INVALID_ARG, "json schema: property "
                                "\"%s\" declared twice", name);
        if ((st = compile(js, &props->kids[i], depth + 1, &kid)) != KS_OK)
            return st;
        if ((st = add_text(&js->nodes[id], name, strlen(name))) != KS_OK)
            return st;
        if (!(pn = realloc(js->nodes[id].prop, props->n * sizeof(*pn))))
            return ks_error(KS_ERR_NOMEM, "json schema: no memory");
        js->nodes[id].prop = pn;
        pn[i] = kid;
    }
    for (uint32_t i = 0; req && i < req->n; i++) {
        uint32_t j;
        if (req->kids[i].t != 's')
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"required\" "
                            "must list strings");
        for (j = 0; j < props->n; j++)
            if (strcmp(props->keys[j], req->kids[i].str) == 0)
                break;
        if (j == props->n)
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: required property "
                            "\"%s\" is not in \"properties\"", req->kids[i].str);
        js->nodes[id].required |= 1ull << j;
    }
    *out = id;
    return KS_OK;
}

static ks_status
compile(ks_json_schema *js, const jv *s, int depth, uint16_t *out)
{
    const jv *type, *e;
    ks_status st;
    uint16_t id;

    if (s->t == 't' && depth > 0) {  /* true: anything */
        *out = G_ANY;
        return KS_OK;
    }
    if (s->t != 'o')
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: a schema must be an "
                        "object, found %.*s", (int)(s->raw_len > 40 ? 40 : s->raw_len), s->raw);
    if (depth > JS_MAX_DEPTH - 2)
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: nested deeper than %d",
                        JS_MAX_DEPTH - 2);
    for (uint32_t i = 0; i < s->n; i++) {
        size_t k;
        for (k = 0; k < sizeof k_keywords / sizeof k_keywords[0]; k++)
            if (strcmp(s->keys[i], k_keywords[k]) == 0)
                break;
        if (k == sizeof k_keywords / sizeof k_keywords[0])
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: keyword \"%s\" is not "
                            "supported (supported: type, properties, required, "
                            "additionalProperties false, items, minItems, maxItems, "
                            "minLength, maxLength, enum, const)", s->keys[i]);
    }
    if ((e = member(s, "const")) != NULL)
        return compile_enum(js, e, 1, out);
    if ((e = member(s, "enum")) != NULL) {
        if (e->t != 'a')
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"enum\" must be an array");
        return compile_enum(js, e->kids, e->n, out);
    }
    type = member(s, "type");
    if (!type) {
        *out = G_ANY;
        return KS_OK;
    }
    if (type->t != 's')
        return ks_error(KS_ERR_UNSUPPORTED, "json schema: \"type\" must be one "
                        "string (a list of types is not supported)");
    if (strcmp(type->str, "object") == 0)
        return compile_object(js, s, depth, out);
    if (strcmp(type->str, "array") == 0) {
        const jv *items = member(s, "items");
        uint16_t it = G_ANY;
        if (items && (st = compile(js, items, depth + 1, &it)) != KS_OK)
            return st;
        if ((st = new_node(js, N_ARRAY, &id)) != KS_OK)
            return st;
        js->nodes[id].items = it;
        if ((st = get_count(s, "minItems", &js->nodes[id].min_n)) != KS_OK ||
            (st = get_count(s, "maxItems", &js->nodes[id].max_n)) != KS_OK)
            return st;
        if (js->nodes[id].min_n > js->nodes[id].max_n)
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: minItems > maxItems");
        *out = id;
        return KS_OK;
    }
    if (strcmp(type->str, "string") == 0) {
        if ((st = new_node(js, N_STRING, &id)) != KS_OK)
            return st;
        if ((st = get_count(s, "minLength", &js->nodes[id].min_n)) != KS_OK ||
            (st = get_count(s, "maxLength", &js->nodes[id].max_n)) != KS_OK)
            return st;
        if (js->nodes[id].min_n > js->nodes[id].max_n)
            return ks_error(KS_ERR_UNSUPPORTED, "json schema: minLength > maxLength");
        *out = id;
        return KS_OK;
    }
    if (strcmp(type->str, "number") == 0 || strcmp(type->str, "integer") == 0) {
        if ((st = new_node(js, type->str[0] == 'n' ? N_NUMBER : N_INTEGER, &id)) != KS_OK)
            return st;
        *out = id;
        return KS_OK;
    }
    if (strcmp(type->str, "boolean") == 0 || strcmp(type->str, "null") == 0) {
        if ((st = new_node(js, N_LIT, &id)) != KS_OK)
            return st;
        if (type->str[0] == 'n')
            st = add_text(&js->nodes[id], "null", 4);
        else if ((st = add_text(&js->nodes[id], "true", 4)) == KS_OK)
            st = add_text(&js->nodes[id], "false", 5);
        *out = id;
        return st;
    }
    return ks_error(KS_ERR_UNSUPPORTED, "json schema: unknown type \"%s\"", type->str);
}

void
ks_json_schema_destroy(ks_json_schema *js)
{
    if (!js)
        return;
    for (uint32_t i = 0; i < js->n; i++) {
        for (uint32_t j = 0; j < js->nodes[i].n; j++)
            free(js->nodes[i].text[j]);
        free(js->nodes[i].text);
        free(js->nodes[i].len);
        free(js->nodes[i].prop);
    }
    free(js->nodes);
    free(js);
}

ks_status
ks_json_schema_create(const char *text, ks_json_schema **out)
{
    ks_json_schema *js;
    reader r = { text, text };
    jv v = { 0 };
    ks_status st;
    uint16_t id;

    *out = NULL;
    if (!text)
        return ks_null_arg("ks_json_schema_create", "text");
    if (!(js = calloc(1, sizeof(*js))))
        return ks_error(KS_ERR_NOMEM, "json schema: no memory");
    static const uint8_t fixed[G_FIXED] = {
        [G_ANY] = N_ANY, [G_LIT] = N_LIT, [G_OBJ] = N_OBJANY, [G_ARR] = N_ARRAY,
        [G_STR] = N_STRING, [G_NUM] = N_NUMBER,
    };
    for (int i = 0; i < G_FIXED; i++)
        if ((st = new_node(js, fixed[i], &id)) != KS_OK)
            goto fail;
    js->nodes[G_ARR].items = G_ANY;
    if ((st = add_text(&js->nodes[G_LIT], "true", 4)) != KS_OK ||
        (st = add_text(&js->nodes[G_LIT], "false", 5)) != KS_OK ||
        (st = add_text(&js->nodes[G_LIT], "null", 4)) != KS_OK)
        goto fail;
    if ((st = read_value(&r, &v, 0)) != KS_OK)
        goto fail;
    skip_ws(&r);
    if (*r.p) {
        st = bad(&r, "text after the schema");
        goto fail;
    }
    if (v.t != 'o') {
        st = ks_error(KS_ERR_UNSUPPORTED, "json schema: the schema must be a JSON object");
        goto fail;
    }
    if ((st = compile(js, &v, 0, &js->root)) != KS_OK)
        goto fail;
    jv_free(&v);
    *out = js;
    return KS_OK;
fail:
    jv_free(&v);
    ks_json_schema_destroy(js);
    return st;
}

KS_API ks_status
ks_json_schema_check(const char *schema)
{
    ks_json_schema *js;
    ks_status st;

    if (!schema)
        return ks_null_arg("ks_json_schema_check", "schema");
    st = ks_json_schema_create(schema, &js);
    ks_json_schema_destroy(js);
    return st;
}

/* ---- the recognizer ---- */

enum { F_ROOT, F_OBJ, F_ARR, F_STR, F_NUM, F_LIT };
enum { O_OPEN, O_KEYSTART, O_KEY, O_COLON, O_VALUE, O_AFTER };
enum { A_OPEN, A_ITEM, A_AFTER, A_NEXT };
enum { S_CHAR, S_ESC };
enum { NUM_START, NUM_MINUS, NUM_ZERO, NUM_INT, NUM_DOT, NUM_FRAC, NUM_E, NUM_ESIGN, NUM_EXP };

typedef struct jframe {
    uint8_t  kind, phase;
    uint8_t  u_need, u_lo, u_hi;  /* F_STR: UTF-8 continuation bytes */
    uint8_t  hex;                 /* F_STR: \u digits left */
    uint8_t  is_key;              /* F_STR: a member name of an any-object */
    uint8_t  pad;
    uint16_t node;
    int16_t  prop;                /* F_OBJ: the member being read */
    uint32_t pos;                 /* name/literal position, digits */
    uint32_t count;               /* string characters, array items */
    uint64_t seen, cand;
} jframe;

struct ks_json_state {
    const ks_json_schema *js;
    uint32_t depth;
    jframe   f[JS_MAX_DEPTH];
};

static void
state_copy(ks_json_state *d, const ks_json_state *s)
{
    d->js = s->js;
    d->depth = s->depth;
    memcpy(d->f, s->f, s->depth * sizeof(jframe));
}

void
ks_json_state_reset(ks_json_state *st)
{
    memset(&st->f[0], 0, sizeof(jframe));
    st->f[0].kind = F_ROOT;
    st->depth = 1;
}

ks_status
ks_json_state_create(const ks_json_schema *js, ks_json_state **out)
{
    ks_json_state *st = calloc(1, sizeof(*st));
    *out = NULL;
    if (!st)
        return ks_error(KS_ERR_NOMEM, "json: no memory");
    st->js = js;
    ks_json_state_reset(st);
    *out = st;
    return KS_OK;
}

void
ks_json_state_destroy(ks_json_state *st)
{
    free(st);
}

static uint64_t
all_bits(uint32_t n)
{
    return n >= 64 ? ~0ull : (1ull << n) - 1;
}

static jframe *
push(ks_json_state *st, uint8_t kind, uint16_t node)
{
    jframe *f;
    if (st->depth == JS_MAX_DEPTH)
        return NULL;
    f = &st->f[st->depth++];
    memset(f, 0, sizeof(*f));
    f->kind = kind;
    f->node = node;
    return f;
}

/* The top frame's value is finished: pop it and tell the parent. */
static void
value_done(ks_json_state *st)
{
    jframe *f;
    st->depth--;
    f = &st->f[st->depth - 1];
    if (f->kind == F_ROOT)
        f->phase = 1;
    else if (f->kind == F_OBJ)
        f->phase = O_AFTER;
    else if (f->kind == F_ARR) {
        f->count++;
        f->phase = A_AFTER;
    }
}

enum { R_NO, R_YES, R_END };  /* rejected, taken, not mine: value ended */

static int
num_byte(jframe *f, bool integer, unsigned char b)
{
    bool digit = b >= '0' && b <= '9';
    switch (f->phase) {
    case NUM_START:
        if (b == '-') {
            f->phase = NUM_MINUS;
            return R_YES;
        }
        /* fall through */
    case NUM_MINUS:
        if (b == '0')
            f->phase = NUM_ZERO;
        else if (digit) {
            f->phase = NUM_INT;
            f->pos = 1;
        } else
            return R_NO;
        return R_YES;
    case NUM_ZERO:
    case NUM_INT:
        if (digit) {
            if (f->phase == NUM_ZERO || f->pos >= INT_DIGITS)
                return R_NO;
            f->pos++;
            return R_YES;
        }
        if (!integer && b == '.') {
            f->phase = NUM_DOT;
            return R_YES;
        }
        if (!integer && (b == 'e' || b == 'E')) {
            f->phase = NUM_E;
            return R_YES;
        }
        return R_END;
    case NUM_DOT:
        if (!digit)
            return R_NO;
        f->phase = NUM_FRAC;
        f->pos = 1;
        return R_YES;
    case NUM_FRAC:
        if (digit) {
            if (f->pos >= FRAC_DIGITS)
                return R_NO;
            f->pos++;
            return R_YES;
        }
        if (b == 'e' || b == 'E') {
            f->phase = NUM_E;
            return R_YES;
        }
        return R_END;
    case NUM_E:
        if (b == '+' || b == '-') {
            f->phase = NUM_ESIGN;
            return R_YES;
        }
        /* fall through */
    case NUM_ESIGN:
        if (!digit)
            return R_NO;
        f->phase = NUM_EXP;
        f->pos = 1;
        return R_YES;
    case NUM_EXP:
        if (digit) {
            if (f->pos >= EXP_DIGITS)
                return R_NO;
            f->pos++;
            return R_YES;
        }
        return R_END;
    }
    return R_NO;
}

static bool
lit_complete(const jnode *nd, const jframe *f)
{
    for (uint32_t i = 0; i < nd->n; i++)
        if ((f->cand >> i & 1) && nd->len[i] == f->pos)
            return true;
    return false;
}

static int
lit_byte(const jnode *nd, jframe *f, unsigned char b)
{
    uint64_t c = 0;
    for (uint32_t i = 0; i < nd->n; i++)
        if ((f->cand >> i & 1) && nd->len[i] > f->pos &&
            (unsigned char)nd->text[i][f->pos] == b)
            c |= 1ull << i;
    if (c) {
        f->cand = c;
        f->pos++;
        return R_YES;
    }
    return lit_complete(nd, f) ? R_END : R_NO;
}

static bool
num_complete(const jframe *f)
{
    return f->phase == NUM_ZERO || f->phase == NUM_INT || f->phase == NUM_FRAC ||
           f->phase == NUM_EXP;
}

/* A value of |node| starts with |b|. */
static bool
start_value(ks_json_state *st, uint16_t node, unsigned char b)
{
    const ks_json_schema *js = st->js;
    const jnode *nd = &js->nodes[node];
    jframe *f;

    switch (nd->kind) {
    case N_ANY:
        if (b == '{')
            return start_value(st, G_OBJ, b);
        if (b == '[')
            return start_value(st, G_ARR, b);
        if (b == '"')
            return start_value(st, G_STR, b);
        if (b == '-' || (b >= '0' && b <= '9'))
            return start_value(st, G_NUM, b);
        return start_value(st, G_LIT, b);
    case N_OBJECT:
    case N_OBJANY:
        return b == '{' && push(st, F_OBJ, node);
    case N_ARRAY:
        return b == '[' && push(st, F_ARR, node);
    case N_STRING:
        return b == '"' && push(st, F_STR, node);
    case N_NUMBER:
    case N_INTEGER:
        if (!(f = push(st, F_NUM, node)))
            return false;
        return num_byte(f, nd->kind == N_INTEGER, b) == R_YES;
    case N_LIT:
        if (!(f = push(st, F_LIT, node)))
            return false;
        f->cand = all_bits(nd->n);
        return lit_byte(nd, f, b) == R_YES;
    }
    return false;
}

static bool
str_byte(ks_json_state *st, jframe *f, unsigned char b)
{
    const jnode *nd = &st->js->nodes[f->node];

    if (f->hex) {
        int h = hexval(b);
        if (h < 0)
            return false;
        /* no surrogates: \uD800-\uDFFF */
        if (f->hex == 4)
            f->pos = (h == 0xD);
        else if (f->hex == 3 && f->pos && h >= 8)
            return false;
        if (--f->hex == 0)
            f->count++;
        return true;
    }
    if (f->phase == S_ESC) {
        f->phase = S_CHAR;
        if (b == 'u') {
            f->hex = 4;
            return true;
        }
        if (!strchr("\"\\/bfnrt", b) || !b)
            return false;
        f->count++;
        return true;
    }
    if (f->u_need) {
        if (b < f->u_lo || b > f->u_hi)
            return false;
        f->u_need--;
        f->u_lo = 0x80;
        f->u_hi = 0xBF;
        return true;
    }
    if (b == '"') {
        if (f->count < nd->min_n)
            return false;
        if (f->is_key) {
            st->depth--;
            st->f[st->depth - 1].phase = O_COLON;
        } else {
            value_done(st);
        }
        return true;
    }
    if (b < 0x20 || f->count >= nd->max_n)
        return false;
    if (b == '\\') {
        f->phase = S_ESC;
        return true;
    }
    if (b >= 0x80) {
        f->u_lo = 0x80;
        f->u_hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            f->u_need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            f->u_need = 2;
            if (b == 0xE0)
                f->u_lo = 0xA0;
            else if (b == 0xED)
                f->u_hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            f->u_need = 3;
            if (b == 0xF0)
                f->u_lo = 0x90;
            else if (b == 0xF4)
                f->u_hi = 0x8F;
        } else
            return false;
    }
    f->count++;
    return true;
}

static bool
obj_byte(ks_json_state *st, jframe *f, unsigned char b)
{
    const jnode *nd = &st->js->nodes[f->node];
    bool any = nd->kind == N_OBJANY;
    uint64_t all = all_bits(nd->n);

    switch (f->phase) {
    case O_OPEN:
    case O_AFTER:
        if (b == '}') {
            if (!any && (nd->required & ~f->seen))
                return false;
            value_done(st);
            return true;
        }
        if (f->phase == O_AFTER) {
            if (b != ',' || (!any && !(all & ~f->seen)))
                return false;
            f->phase = O_KEYSTART;
            return true;
        }
        /* '"' opens the first name */
        /* fall through */
    case O_KEYSTART:
        if (b != '"')
            return false;
        if (any) {
            jframe *k;
            f->phase = O_KEY;
            if (!(k = push(st, F_STR, G_STR)))
                return false;
            k->is_key = 1;
            return true;
        }
        if (!(all & ~f->seen))
            return false;
        f->phase = O_KEY;
        f->cand = all & ~f->seen;
        f->pos = 0;
        return true;
    case O_KEY: {  /* a declared name */
        uint64_t c = 0;
        if (b == '"') {
            for (uint32_t i = 0; i < nd->n; i++)
                if ((f->cand >> i & 1) && nd->len[i] == f->pos) {
                    f->prop = (int16_t)i;
                    f->seen |= 1ull << i;
                    f->phase = O_COLON;
                    return true;
                }
            return false;
        }
        for (uint32_t i = 0; i < nd->n; i++)
            if ((f->cand >> i & 1) && nd->len[i] > f->pos &&
                (unsigned char)nd->text[i][f->pos] == b)
                c |= 1ull << i;
        if (!c)
            return false;
        f->cand = c;
        f->pos++;
        return true;
    }
    case O_COLON:
        if (b != ':')
            return false;
        f->phase = O_VALUE;
        return true;
    case O_VALUE:
        return start_value(st, any ? G_ANY : nd->prop[f->prop], b);
    }
    return false;
}

static bool
arr_byte(ks_json_state *st, jframe *f, unsigned char b)
{
    const jnode *nd = &st->js->nodes[f->node];

    switch (f->phase) {
    case A_OPEN:
    case A_AFTER:
        if (b == ']') {
            if (f->count < nd->min_n)
                return false;
            value_done(st);
            return true;
        }
        if (f->phase == A_AFTER) {
            if (b != ',' || f->count >= nd->max_n)
                return false;
            f->phase = A_NEXT;
            return true;
        }
        if (nd->max_n == 0)
            return false;
        /* fall through */
    case A_NEXT:
        f->phase = A_ITEM;
        return start_value(st, nd->items, b);
    }
    return false;
}

static bool
feed_byte(ks_json_state *st, unsigned char b)
{
    for (;;) {
        jframe *f = &st->f[st->depth - 1];
        const jnode *nd = &st->js->nodes[f->node];
        int r;

        switch (f->kind) {
        case F_ROOT:
            return f->phase == 0 && start_value(st, st->js->root, b);
        case F_OBJ:
            return obj_byte(st, f, b);
        case F_ARR:
            return arr_byte(st, f, b);
        case F_STR:
            return str_byte(st, f, b);
        case F_NUM:
        case F_LIT:
            r = f->kind == F_NUM ? num_byte(f, nd->kind == N_INTEGER, b) : lit_byte(nd, f, b);
            if (r != R_END)
                return r == R_YES;
            value_done(st);  /* the byte belongs to the parent */
            continue;
        }
        return false;
    }
}

bool
ks_json_state_feed(ks_json_state *st, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!feed_byte(st, (unsigned char)bytes[i]))
            return false;
    return true;
}

bool
ks_json_state_complete(const ks_json_state *st)
{
    const jframe *f = &st->f[st->depth - 1];
    if (st->depth == 1)
        return f->phase == 1;
    if (st->depth == 2) {
        if (f->kind == F_NUM)
            return num_complete(f);
        if (f->kind == F_LIT)
            return lit_complete(&st->js->nodes[f->node], f);
    }
    return false;
}

/* ---- the token mask ---- */

/* A trie of pieces: node 0 is the root; the tokens whose piece ends at a
 * node are listed from tok_head through tok_next. */
typedef struct trie {
    uint32_t n_nodes;
    int32_t *child, *sib, *tok_head;
    int32_t *tok_next;  /* [n_vocab] */
    uint8_t *label;
} trie;

struct ks_json_mask {
    ks_json_state  live;
    uint32_t       n_vocab;
    char          *bytes;     /* every token's piece */
    uint32_t      *off, *len;
    uint8_t       *eog;
    uint8_t       *allowed;
    uint32_t       n_allowed;
    uint32_t       max_len;
    ks_json_state *work;      /* [max_len + 1] */
    trie           all;       /* every token with a piece, but eog */
    /* Inside a string, most tokens are plain string text whatever comes
     * before (no quote, whole escapes or none): in_str lists them
     * (n_in_str), and the walk covers only the trie of the others. */
    uint8_t       *in_str;
    uint16_t      *need;      /* in_str: string characters of room it takes */
    uint32_t       n_in_str;
    trie           rest;
};

typedef struct piece_ref {
    const uint8_t *p;
    uint32_t len;
    int32_t tok;
} piece_ref;

static int
cmp_piece(const void *a, const void *b)
{
    const piece_ref *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static void
trie_free(trie *t)
{
    free(t->child);
    free(t->sib);
    free(t->tok_head);
    free(t->tok_next);
    free(t->label);
}

/* Builds |t| over refs[0..n) (sorted), whose pieces hold |total| bytes at
 * most; path has room for the longest piece + 1. */
static bool
trie_build(trie *t, const piece_ref *refs, uint32_t n, size_t total, uint32_t n_vocab,
           int32_t *path)
{
    t->child = malloc((total + 1) * sizeof(*t->child));
    t->sib = malloc((total + 1) * sizeof(*t->sib));
    t->tok_head = malloc((total + 1) * sizeof(*t->tok_head));
    t->label = malloc(total + 1);
    t->tok_next = malloc(n_vocab * sizeof(*t->tok_next));
    if (!t->child || !t->sib || !t->tok_head || !t->label || !t->tok_next)
        return false;
    t->child[0] = t->sib[0] = t->tok_head[0] = -1;
    t->n_nodes = 1;
    path[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        const piece_ref *r = &refs[i];
        uint32_t l = 0;
        int32_t node;
        if (i > 0) {  /* sorted: the previous piece shares the longest prefix */
            const piece_ref *q = &refs[i - 1];
            while (l < r->len && l < q->len && r->p[l] == q->p[l])
                l++;
        }
        node = path[l];
        for (uint32_t k = l; k < r->len; k++) {
            int32_t c = (int32_t)t->n_nodes++;
            t->label[c] = r->p[k];
            t->child[c] = -1;
            t->tok_head[c] = -1;
            t->sib[c] = t->child[node];
            t->child[node] = c;
            path[k + 1] = c;
            node = c;
        }
        t->tok_next[r->tok] = t->tok_head[node];
        t->tok_head[node] = r->tok;
    }
    return true;
}

void
ks_json_mask_destroy(ks_json_mask *m)
{
    if (!m)
        return;
    free(m->bytes);
    free(m->off);
    free(m->len);
    free(m->eog);
    free(m->allowed);
    free(m->in_str);
    free(m->need);
    trie_free(&m->all);
    trie_free(&m->rest);
    free(m->work);
    free(m);
}

ks_status
ks_json_mask_create(const ks_json_schema *js, const ks_tokenizer *tok,
                    uint32_t n_vocab, ks_json_mask **out)
{
    ks_json_mask *m = calloc(1, sizeof(*m));
    piece_ref *refs = NULL;
    int32_t *path = NULL;
    size_t total = 0, cap = 1 << 16;
    uint32_t n_refs = 0;
    ks_status st = KS_ERR_NOMEM;

    *out = NULL;
    if (!m)
        return ks_error(KS_ERR_NOMEM, "json: no memory");
    m->live.js = js;
    ks_json_state_reset(&m->live);
    m->n_vocab = n_vocab;
    m->off = calloc(n_vocab, sizeof(*m->off));
    m->len = calloc(n_vocab, sizeof(*m->len));
    m->eog = calloc(n_vocab, 1);
    m->allowed = calloc(n_vocab, 1);
    m->bytes = malloc(cap);
    refs = malloc(n_vocab * sizeof(*refs));
    if (!m->off || !m->len || !m->eog || !m->allowed || !m->bytes || !refs)
        goto nomem;
    for (uint32_t t = 0; t < n_vocab; t++) {
        size_t n = ks_tokenizer_piece(tok, (int32_t)t, NULL, 0);
        m->eog[t] = ks_tokenizer_is_eog(tok, (int32_t)t);
        if (total + n > cap) {
            char *nb;
            while (total + n > cap)
                cap *= 2;
            if (!(nb = realloc(m->bytes, cap)))
                goto nomem;
            m->bytes = nb;
        }
        ks_tokenizer_piece(tok, (int32_t)t, m->bytes + total, n);
        m->off[t] = (uint32_t)total;
        m->len[t] = (uint32_t)n;
        total += n;
        if (n && !m->eog[t]) {
            refs[n_refs].len = (uint32_t)n;
            refs[n_refs].tok = (int32_t)t;
            n_refs++;
            if (n > m->max_len)
                m->max_len = (uint32_t)n;
        }
    }
    for (uint32_t i = 0; i < n_refs; i++)
        refs[i].p = (const uint8_t *)m->bytes + m->off[refs[i].tok];
    qsort(refs, n_refs, sizeof(*refs), cmp_piece);
    path = malloc((m->max_len + 1) * sizeof(*path));
    m->work = malloc((m->max_len + 1) * sizeof(*m->work));
    m->in_str = calloc(n_vocab, 1);
    m->need = calloc(n_vocab, sizeof(*m->need));
    if (!path || !m->work || !m->in_str || !m->need ||
        !trie_build(&m->all, refs, n_refs, total, n_vocab, path))
        goto nomem;
    {
        /* plain string text: fed into a string, stays in it */
        uint32_t n_rest = 0;
        for (uint32_t i = 0; i < n_refs; i++) {
            ks_json_state *w = &m->work[0];
            const jframe *f = &w->f[1];
            ks_json_state_reset(w);
            w->js = js;
            push(w, F_STR, G_STR);
            if (ks_json_state_feed(w, (const char *)refs[i].p, refs[i].len) && w->depth == 2) {
                /* a string's length is checked as a character starts: a
                 * pending escape has passed its check already */
                uint32_t need = f->count + (f->phase == S_ESC || f->hex);
                m->in_str[refs[i].tok] = 1;
                m->need[refs[i].tok] = (uint16_t)(need < UINT16_MAX ? need : UINT16_MAX);
                m->n_in_str++;
            } else {
                refs[n_rest++] = refs[i];  /* stays sorted */
            }
        }
        if (!trie_build(&m->rest, refs, n_rest, total, n_vocab, path))
            goto nomem;
    }
    free(refs);
    free(path);
    *out = m;
    return KS_OK;
nomem:
    st = ks_error(KS_ERR_NOMEM, "json: no memory for the token trie of %u tokens", n_vocab);
    free(refs);
    free(path);
    ks_json_mask_destroy(m);
    return st;
}

void
ks_json_mask_reset(ks_json_mask *m)
{
    ks_json_state_reset(&m->live);
}

static void
walk(ks_json_mask *m, const trie *tr, int32_t node, uint32_t d)
{
    for (int32_t c = tr->child[node]; c >= 0; c = tr->sib[c]) {
        ks_json_state *s = &m->work[d + 1];
        state_copy(s, &m->work[d]);
        if (!feed_byte(s, tr->label[c]))
            continue;
        for (int32_t t = tr->tok_head[c]; t >= 0; t = tr->tok_next[t]) {
            m->allowed[t] = 1;
            m->n_allowed++;
        }
        walk(m, tr, c, d + 1);
    }
}

/* Inside a string between characters: an in_str token continues it when
 * the string has room for its characters. *room gets that room. */
static bool
clean_in_string(const ks_json_mask *m, uint32_t *room)
{
    const jframe *f = &m->live.f[m->live.depth - 1];
    const jnode *nd;

    if (f->kind != F_STR || f->phase != S_CHAR || f->hex || f->u_need)
        return false;
    nd = &m->live.js->nodes[f->node];
    *room = nd->max_n == UINT32_MAX ? UINT32_MAX : nd->max_n - f->count;
    return true;
}

ks_status
ks_json_mask_apply(ks_json_mask *m, const float *logits, float *out, bool *done)
{
    bool complete = ks_json_state_complete(&m->live);

    *done = false;
    uint32_t room;

    state_copy(&m->work[0], &m->live);
    if (clean_in_string(m, &room)) {
        if (room >= UINT16_MAX) {
            memcpy(m->allowed, m->in_str, m->n_vocab);
            m->n_allowed = m->n_in_str;
        } else {
            m->n_allowed = 0;
            for (uint32_t t = 0; t < m->n_vocab; t++) {
                m->allowed[t] = m->in_str[t] && m->need[t] <= room;
                m->n_allowed += m->allowed[t];
            }
        }
        walk(m, &m->rest, 0, 0);
    } else {
        memset(m->allowed, 0, m->n_vocab);
        m->n_allowed = 0;
        walk(m, &m->all, 0, 0);
    }
    if (m->n_allowed == 0) {
        if (complete) {
            *done = true;
            return KS_OK;
        }
        return ks_error(KS_ERR_UNSUPPORTED, "json: no token of the vocabulary "
                        "continues the output here");
    }
    for (uint32_t t = 0; t < m->n_vocab; t++)
        out[t] = (m->allowed[t] || (complete && m->eog[t])) ? logits[t] : -INFINITY;
    return KS_OK;
}

ks_status
ks_json_mask_accept(ks_json_mask *m, int32_t token)
{
    if (token < 0 || (uint32_t)token >= m->n_vocab || m->len[token] == 0 ||
        !ks_json_state_feed(&m->live, m->bytes + m->off[token], m->len[token]))
        return ks_error(KS_ERR_INTERNAL, "json: token %d does not continue the "
                        "output", (int)token);
    return KS_OK;
}
