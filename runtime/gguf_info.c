/* `kestrel info`: opens a GGUF file with the validating reader and prints
 * its header, metadata, tensor table and a summary, as text or as one JSON
 * object. Long values are abbreviated the same way in both forms: arrays
 * show their element type, count and first few elements, long strings are
 * cut at a UTF-8 boundary and marked "…(N bytes)". Bytes that are not valid
 * UTF-8 are escaped (\xNN in text, U+FFFD in JSON) so the output is always
 * valid text. */
#include "kestrel/inspect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/gguf.h"
#include "runtime/qtype.h"

#define STR_SHOWN 100      /* bytes of a string value shown */
#define ARR_STR_SHOWN 40   /* bytes of each shown string element */
#define ARR_NUM_ITEMS 8    /* numeric elements shown */
#define ARR_STR_ITEMS 5    /* string elements shown */
#define ARR_SUB_ITEMS 3    /* nested arrays shown */

static const char ellipsis[] = "\xe2\x80\xa6"; /* U+2026 */

/* Length of the valid UTF-8 sequence at |p| (|n| bytes left), 0 if the
 * bytes there are not one. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t        len;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (n < len)
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Writes |s| quoted and escaped, at most about |limit| bytes of it; a cut
 * string ends with "…(N bytes)" (inside the quotes for JSON). */
static void
put_str(FILE *out, const char *s, size_t n, size_t limit, bool json)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t               i = 0;

    fputc('"', out);
    while (i < n) {
        unsigned char c = p[i];
        size_t        len = utf8_len(p + i, n - i);

        if (i >= limit || (len > 1 && i + len > limit))
            break;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc(c, out);
        } else if (c == '\n') {
            fputs("\\n", out);
        } else if (c == '\t') {
            fputs("\\t", out);
        } else if (c == '\r') {
            fputs("\\r", out);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(out, json ? "\\u%04x" : "\\x%02x", c);
        } else if (len == 0) {
            if (json)
                fputs("\\ufffd", out);
            else
                fprintf(out, "\\x%02x", c);
            len = 1;
        } else {
            fwrite(p + i, 1, len, out);
        }
        i += len ? len : 1;
    }
    if (i < n) {
        if (json)
            fprintf(out, "%s(%zu bytes)\"", ellipsis, n);
        else
            fprintf(out, "\"%s(%zu bytes)", ellipsis, n);
        return;
    }
    fputc('"', out);
}

/* Shortest text that reads back as the same value. */
static void
put_float(FILE *out, double v, bool is_f32, bool json)
{
    char buf[40];

    if (!isfinite(v)) {
        fputs(json ? "null" : (isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf")),
              out);
        return;
    }
    for (int prec = is_f32 ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (is_f32 ? (float)strtod(buf, NULL) == (float)v
                   : strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, out);
}

static void
put_element(FILE *out, const ks_gguf_arr *a, uint64_t i, bool json)
{
    switch (a->type) {
    case KS_GGUF_F32:
    case KS_GGUF_F64:
        put_float(out, ks_gguf_arr_f64(a, i), a->type == KS_GGUF_F32, json);
        break;
    case KS_GGUF_BOOL:
        fputs(ks_gguf_arr_u64(a, i) ? "true" : "false", out);
        break;
    case KS_GGUF_I8: case KS_GGUF_I16: case KS_GGUF_I32: case KS_GGUF_I64:
        fprintf(out, "%lld", (long long)ks_gguf_arr_i64(a, i));
        break;
    default:
        fprintf(out, "%llu", (unsigned long long)ks_gguf_arr_u64(a, i));
        break;
    }
}

static uint64_t
items_shown(const ks_gguf_arr *a)
{
    uint64_t max = a->type == KS_GGUF_STR ? ARR_STR_ITEMS
                   : a->type == KS_GGUF_ARR ? ARR_SUB_ITEMS : ARR_NUM_ITEMS;

    return a->n < max ? a->n : max;
}

static void
put_arr_text(FILE *out, const ks_gguf_arr *a)
{
    uint64_t shown = items_shown(a);

    fprintf(out, "[%s \xc3\x97 %llu]", ks_gguf_type_name(a->type),
            (unsigned long long)a->n);
    for (uint64_t i = 0; i < shown; i++) {
        fputs(i ? ", " : " ", out);
        if (a->type == KS_GGUF_STR) {
            size_t      len;
            const char *s = ks_gguf_arr_str(a, i, &len);

            put_str(out, s, len, ARR_STR_SHOWN, false);
        } else if (a->type == KS_GGUF_ARR) {
            fputc('(', out);
            put_arr_text(out, ks_gguf_arr_sub(a, i));
            fputc(')', out);
        } else {
            put_element(out, a, i, false);
        }
    }
    if (shown < a->n)
        fputs(", ...", out);
}

static void
put_arr_json(FILE *out, const ks_gguf_arr *a)
{
    uint64_t shown = items_shown(a);

    fprintf(out, "{\"elem_type\": \"%s\", \"count\": %llu"
            ", \"truncated\": %s, \"values\": [", ks_gguf_type_name(a->type),
            (unsigned long long)a->n, shown < a->n ? "true" : "false");
    for (uint64_t i = 0; i < shown; i++) {
        if (i)
            fputs(", ", out);
        if (a->type == KS_GGUF_STR) {
            size_t      len;
            const char *s = ks_gguf_arr_str(a, i, &len);

            put_str(out, s, len, ARR_STR_SHOWN, true);
        } else if (a->type == KS_GGUF_ARR) {
            put_arr_json(out, ks_gguf_arr_sub(a, i));
        } else {
            put_element(out, a, i, true);
        }
    }
    fputs("]}", out);
}

static void
put_scalar(FILE *out, const ks_gguf_kv *kv, bool json)
{
    switch (kv->type) {
    case KS_GGUF_STR:
        put_str(out, kv->str, kv->str_len, STR_SHOWN, json);
        break;
    case KS_GGUF_BOOL:
        fputs(kv->v.b ? "true" : "false", out);
        break;
    case KS_GGUF_F32:
    case KS_GGUF_F64:
        put_float(out, kv->v.f64, kv->type == KS_GGUF_F32, json);
        break;
    case KS_GGUF_I8: case KS_GGUF_I16: case KS_GGUF_I32: case KS_GGUF_I64:
        fprintf(out, "%lld", (long long)kv->v.i64);
        break;
    case KS_GGUF_ARR:
        if (json)
            put_arr_json(out, &kv->arr);
        else
            put_arr_text(out, &kv->arr);
        break;
    default:
        fprintf(out, "%llu", (unsigned long long)kv->v.u64);
        break;
    }
}

typedef struct summary {
    uint64_t    n_params;
    uint64_t    n_bytes;
    uint64_t    per_type[KS_QUANT_COUNT];
    const char *arch;
    size_t      arch_len;
    const char *name;
    size_t      name_len;
} summary;

static void
summarize(const ks_gguf *g, summary *s)
{
    memset(s, 0, sizeof(*s));
    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);

        s->n_params += t->n_elems;
        s->n_bytes += t->size_bytes;
        if (t->type < KS_QUANT_COUNT)
            s->per_type[t->type]++;
    }
    s->arch = ks_gguf_get_str(g, "general.architecture", &s->arch_len);
    s->name = ks_gguf_get_str(g, "general.name", &s->name_len);
}

static double
bits_per_weight(const summary *s)
{
    return s->n_params ? (double)s->n_bytes * 8.0 / (double)s->n_params : 0;
}

static void
human(char *buf, size_t cap, double v, const char *unit_base)
{
    static const char *k[] = { "", "K", "M", "G", "T" };
    int                i = 0;
    double             div = unit_base[0] == 'i' ? 1024.0 : 1000.0;

    while (v >= div && i < 4) {
        v /= div;
        i++;
    }
    if (i == 0)
        snprintf(buf, cap, "%.0f%s", v, unit_base[0] == 'i' ? " B" : "");
    else if (unit_base[0] == 'i')
        snprintf(buf, cap, "%.2f %siB", v, k[i]);
    else
        snprintf(buf, cap, "%.2f%s", v, i == 3 ? "B" : k[i]);
}

static void
print_text(const ks_gguf *g, const char *path, FILE *out)
{
    summary s;
    char    h[48];
    size_t  width = 4;

    summarize(g, &s);
    human(h, sizeof h, (double)ks_gguf_file_size(g), "i");
    fprintf(out, "file         %s\n", path);
    fprintf(out, "version      %u\n", ks_gguf_version(g));
    fprintf(out, "tensors      %llu\n", (unsigned long long)ks_gguf_n_tensors(g));
    fprintf(out, "metadata     %llu keys\n", (unsigned long long)ks_gguf_n_kv(g));
    fprintf(out, "alignment    %u\n", ks_gguf_alignment(g));
    fprintf(out, "file size    %llu bytes (%s)\n",
            (unsigned long long)ks_gguf_file_size(g), h);
    fprintf(out, "data offset  %llu\n",
            (unsigned long long)ks_gguf_data_offset(g));

    fprintf(out, "\nmetadata:\n");
    for (uint64_t i = 0; i < ks_gguf_n_kv(g); i++) {
        const ks_gguf_kv *kv = ks_gguf_kv_at(g, i);

        fprintf(out, "  %-7s %s = ", ks_gguf_type_name(kv->type), kv->key);
        put_scalar(out, kv, false);
        fputc('\n', out);
    }

    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        size_t n = strlen(ks_gguf_tensor_at(g, i)->name);

        if (n > width)
            width = n;
    }
    fprintf(out, "\ntensors:\n  %-*s  %-7s  %-24s  %12s  %12s\n", (int)width,
            "name", "type", "shape", "bytes", "offset");
    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);
        char                  shape[96];
        size_t                o = 0;

        for (uint32_t d = 0; d < t->n_dims && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%llu",
                                  d ? " x " : "",
                                  (unsigned long long)t->ne[d]);
        fprintf(out, "  %-*s  %-7s  %-24s  %12llu  %12llu\n", (int)width,
                t->name, ks_qtype_name(t->type), shape,
                (unsigned long long)t->size_bytes,
                (unsigned long long)t->offset);
    }

    fprintf(out, "\nsummary:\n  architecture  ");
    if (s.arch)
        put_str(out, s.arch, s.arch_len, STR_SHOWN, false);
    else
        fputs("(none)", out);
    fprintf(out, "\n  name          ");
    if (s.name)
        put_str(out, s.name, s.name_len, STR_SHOWN, false);
    else
        fputs("(none)", out);
    human(h, sizeof h, (double)s.n_params, "");
    fprintf(out, "\n  parameters    %llu (%s)\n",
            (unsigned long long)s.n_params, h);
    human(h, sizeof h, (double)s.n_bytes, "i");
    fprintf(out, "  tensor bytes  %llu (%s)\n", (unsigned long long)s.n_bytes,
            h);
    fprintf(out, "  bits/weight   %.2f\n", bits_per_weight(&s));
    fprintf(out, "  tensor types  ");
    for (uint32_t t = 0, first = 1; t < KS_QUANT_COUNT; t++)
        if (s.per_type[t]) {
            fprintf(out, "%s%s: %llu", first ? "" : ", ", ks_qtype_name(t),
                    (unsigned long long)s.per_type[t]);
            first = 0;
        }
    if (s.n_params == 0 && ks_gguf_n_tensors(g) == 0)
        fputs("(none)", out);
    fputc('\n', out);
}

static void
print_json(const ks_gguf *g, const char *path, FILE *out)
{
    summary s;
    bool    first = true;

    summarize(g, &s);
    fputs("{\n  \"file\": ", out);
    put_str(out, path, strlen(path), 4096, true);
    fprintf(out, ",\n  \"version\": %u,\n  \"tensor_count\": %llu,\n"
            "  \"kv_count\": %llu,\n  \"alignment\": %u,\n"
            "  \"file_size\": %llu,\n  \"data_offset\": %llu,\n"
            "  \"metadata\": [", ks_gguf_version(g),
            (unsigned long long)ks_gguf_n_tensors(g),
            (unsigned long long)ks_gguf_n_kv(g), ks_gguf_alignment(g),
            (unsigned long long)ks_gguf_file_size(g),
            (unsigned long long)ks_gguf_data_offset(g));
    for (uint64_t i = 0; i < ks_gguf_n_kv(g); i++) {
        const ks_gguf_kv *kv = ks_gguf_kv_at(g, i);

        fprintf(out, "%s\n    {\"key\": ", i ? "," : "");
        put_str(out, kv->key, kv->key_len, 4096, true);
        fprintf(out, ", \"type\": \"%s\", \"value\": ",
                ks_gguf_type_name(kv->type));
        put_scalar(out, kv, true);
        fputc('}', out);
    }
    fputs("\n  ],\n  \"tensors\": [", out);
    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);

        fprintf(out, "%s\n    {\"name\": ", i ? "," : "");
        put_str(out, t->name, strlen(t->name), 4096, true);
        fprintf(out, ", \"type\": \"%s\", \"shape\": [",
                ks_qtype_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++)
            fprintf(out, "%s%llu", d ? ", " : "",
                    (unsigned long long)t->ne[d]);
        fprintf(out, "], \"bytes\": %llu, \"offset\": %llu}",
                (unsigned long long)t->size_bytes,
                (unsigned long long)t->offset);
    }
    fputs("\n  ],\n  \"summary\": {\"architecture\": ", out);
    if (s.arch)
        put_str(out, s.arch, s.arch_len, STR_SHOWN, true);
    else
        fputs("null", out);
    fputs(", \"name\": ", out);
    if (s.name)
        put_str(out, s.name, s.name_len, STR_SHOWN, true);
    else
        fputs("null", out);
    fprintf(out, ", \"parameters\": %llu, \"tensor_bytes\": %llu, "
            "\"bits_per_weight\": %.4f, \"types\": {",
            (unsigned long long)s.n_params, (unsigned long long)s.n_bytes,
            bits_per_weight(&s));
    for (uint32_t t = 0; t < KS_QUANT_COUNT; t++)
        if (s.per_type[t]) {
            fprintf(out, "%s\"%s\": %llu", first ? "" : ", ",
                    ks_qtype_name(t), (unsigned long long)s.per_type[t]);
            first = false;
        }
    fputs("}}\n}\n", out);
}

ks_status
ks_inspect_file(const char *path, FILE *out, unsigned flags)
{
    ks_gguf  *g = NULL;
    ks_status st;

    if (!path)
        return ks_null_arg("ks_inspect_file", "path");
    if (!out)
        return ks_null_arg("ks_inspect_file", "out");
    if (flags & ~KS_INSPECT_JSON)
        return ks_error(KS_ERR_INVALID_ARG,
                        "ks_inspect_file: unknown flags 0x%x (expected 0 or "
                        "KS_INSPECT_JSON)", flags);
    if ((st = ks_gguf_open(path, &g)) != KS_OK)
        return st;
    if (flags & KS_INSPECT_JSON)
        print_json(g, path, out);
    else
        print_text(g, path, out);
    if (fflush(out) != 0 || ferror(out))
        st = ks_error(KS_ERR_IO, "inspect: cannot write the output for %s",
                      path);
    ks_gguf_destroy(g);
    return st;
}
