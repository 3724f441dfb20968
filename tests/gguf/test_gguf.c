/* Tests of the GGUF reader, writer and info printer: writer→reader round
 * trips of every value type, versions 2 and 3, alignments 32 and 64; one
 * test per kind of damage, each made from a valid writer-made file and
 * checked for its status and message; the real stories260K files when
 * KESTREL_SHARED_DIR has them; and `kestrel info` output. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kestrel/inspect.h"
#include "kestrel/quantize.h"
#include "runtime/gguf.h"
#include "runtime/qtype.h"

/* ---- helpers ---- */

static size_t
find(const uint8_t *b, size_t n, const char *s)
{
    size_t k = strlen(s);

    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(b + i, s, k) == 0)
            return i;
    ck_abort_msg("'%s' not found in the file", s);
    return 0;
}

static void
put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void
put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Offset of the value of KV |key| (after its type field). */
static size_t
kv_value_at(const uint8_t *b, size_t n, const char *key)
{
    return find(b, n, key) + strlen(key) + 4;
}

/* Offsets of a tensor-info record's fields. */
typedef struct tinfo {
    size_t n_dims, dims, type, offset;
} tinfo;

static tinfo
tensor_at(const uint8_t *b, size_t n, const char *name, uint32_t n_dims)
{
    tinfo t;

    t.n_dims = find(b, n, name) + strlen(name);
    t.dims = t.n_dims + 4;
    t.type = t.dims + 8 * n_dims;
    t.offset = t.type + 4;
    return t;
}

static void
expect_fail(const uint8_t *b, size_t n, ks_status st, const char *needle)
{
    ks_gguf  *g = (ks_gguf *)1;
    ks_status got = ks_gguf_open_mem(b, n, &g);

    ck_assert_msg(got == st, "status %d, expected %d (%s)", got, st,
                  ks_last_error());
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(ks_last_error(), needle),
                  "message '%s' lacks '%s'", ks_last_error(), needle);
}

/* A small hand-built byte buffer, for files the writer refuses to make. */
typedef struct bbuf {
    uint8_t b[4096];
    size_t  n;
} bbuf;

static void
b32(bbuf *x, uint32_t v)
{
    put32(x->b + x->n, v);
    x->n += 4;
}

static void
b64(bbuf *x, uint64_t v)
{
    put64(x->b + x->n, v);
    x->n += 8;
}

static void
bstr(bbuf *x, const char *s)
{
    b64(x, strlen(s));
    memcpy(x->b + x->n, s, strlen(s));
    x->n += strlen(s);
}

static void
bheader(bbuf *x, uint64_t n_tensors, uint64_t n_kv)
{
    memcpy(x->b, "GGUF", 4);
    x->n = 4;
    b32(x, 3);
    b64(x, n_tensors);
    b64(x, n_kv);
}

/* Test data for tensors. */
static float    f32_data[5 * 3];
static uint8_t  q4_data[2 * 2 * 18];
static uint8_t  q8_data[34];

static void
fill_data(void)
{
    for (int i = 0; i < 15; i++)
        f32_data[i] = (float)i * 0.5f - 3.0f;
    for (size_t i = 0; i < sizeof q4_data; i++)
        q4_data[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < sizeof q8_data; i++)
        q8_data[i] = (uint8_t)(255 - i);
}

/* The standard valid file the damage tests start from. */
static void
make_valid(uint8_t **out, size_t *n)
{
    ks_gguf_writer *w;
    static const uint32_t u32s[] = { 10, 20, 30 };
    static const bool     bools[] = { true, false, true };
    const char           *toks[] = { "tok_a", "tok_bb", "tok_ccc" };
    uint64_t              ne_f[2] = { 5, 3 }, ne_q4[2] = { 64, 2 };
    uint64_t              ne_q8[1] = { 32 };

    fill_data();
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str(w, "general.architecture",
                                            "llama"), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str(w, "general.name",
                                            "hello-marker"), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "llama.block_count", 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_bool(w, "flag.bool", true), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "arr.u32", KS_GGUF_U32, u32s,
                                            3), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "arr.bool", KS_GGUF_BOOL,
                                            bools, 3), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr_str(w, "arr.tok", toks, NULL, 3),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "t.f32", KS_QUANT_F32, 2,
                                               ne_f, f32_data,
                                               sizeof f32_data), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "t.q4", KS_QUANT_Q4_0, 2,
                                               ne_q4, q4_data,
                                               sizeof q4_data), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "t.q8", KS_QUANT_Q8_0, 1,
                                               ne_q8, q8_data,
                                               sizeof q8_data), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_mem(w, (void **)out, n), KS_OK);
    ks_gguf_writer_destroy(w);
}

/* ---- round trips ---- */

/* A nested array [[1, 2], [3]] of u8, encoded by hand. */
static size_t
nested_value(uint8_t *v)
{
    size_t n = 0;

    put32(v + n, KS_GGUF_ARR); n += 4;  /* outer: 2 arrays */
    put64(v + n, 2); n += 8;
    put32(v + n, KS_GGUF_U8); n += 4;
    put64(v + n, 2); n += 8;
    v[n++] = 1;
    v[n++] = 2;
    put32(v + n, KS_GGUF_U8); n += 4;
    put64(v + n, 1); n += 8;
    v[n++] = 3;
    return n;
}

START_TEST(round_trip_all_types)
{
    uint32_t        version = 2 + (uint32_t)(_i & 1);
    uint32_t        align = (_i & 2) ? 64 : 32;
    ks_gguf_writer *w;
    ks_gguf        *g;
    uint8_t        *buf, nested[64];
    size_t          n, nn;
    static const int8_t   i8s[] = { -128, 0, 127 };
    static const uint16_t u16s[] = { 0, 65535 };
    static const int16_t  i16s[] = { -32768, 5 };
    static const int32_t  i32s[] = { -7, 2147483647 };
    static const uint64_t u64s[] = { 0, UINT64_MAX };
    static const int64_t  i64s[] = { INT64_MIN, 42 };
    static const float    f32s[] = { 1.5f, -0.25f };
    static const double   f64s[] = { 1e300, -2.5 };
    static const uint8_t  u8s[] = { 9, 8, 7, 6 };
    const char           *strs[] = { "", "a\0b", "hello" };
    const size_t          lens[] = { 0, 3, 5 };
    ks_gguf_arr           a;
    uint64_t              u;
    int64_t               i;
    float                 f;
    double                d;
    bool                  b;
    size_t                len;
    const char           *s;
    uint64_t              ne_f[2] = { 5, 3 }, ne_q4[2] = { 64, 2 };
    uint64_t              ne_q8[1] = { 32 };

    fill_data();
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_version(w, version), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_alignment(w, align), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u8(w, "v.u8", 200), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_i8(w, "v.i8", -100), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u16(w, "v.u16", 60000), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_i16(w, "v.i16", -30000), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "v.u32", 4000000000u), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_i32(w, "v.i32", -2000000000), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_f32(w, "v.f32", 1e-5f), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_bool(w, "v.bool", true), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str(w, "v.str", "héllo"), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u64(w, "v.u64", UINT64_MAX), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_i64(w, "v.i64", INT64_MIN), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_f64(w, "v.f64", 0.1), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str_n(w, "v.nul", "x\0y", 3), KS_OK);
    /* A second set replaces the value. */
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "v.replaced", 1), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "v.replaced", 2), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.u8", KS_GGUF_U8, u8s, 4),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.i8", KS_GGUF_I8, i8s, 3),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.u16", KS_GGUF_U16, u16s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.i16", KS_GGUF_I16, i16s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.i32", KS_GGUF_I32, i32s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.u64", KS_GGUF_U64, u64s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.i64", KS_GGUF_I64, i64s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.f32", KS_GGUF_F32, f32s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.f64", KS_GGUF_F64, f64s, 2),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "a.empty", KS_GGUF_U32, NULL,
                                            0), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr_str(w, "a.str", strs, lens, 3),
                     KS_OK);
    nn = nested_value(nested);
    ck_assert_int_eq(ks_gguf_writer_add_raw_kv(w, "a.nested", KS_GGUF_ARR,
                                               nested, nn), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "t.f32", KS_QUANT_F32, 2,
                                               ne_f, f32_data,
                                               sizeof f32_data), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor_copy(w, "t.q4", KS_QUANT_Q4_0,
                                                    2, ne_q4, q4_data,
                                                    sizeof q4_data), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "t.q8", KS_QUANT_Q8_0, 1,
                                               ne_q8, q8_data,
                                               sizeof q8_data), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_mem(w, (void **)&buf, &n), KS_OK);
    ks_gguf_writer_destroy(w);

    ck_assert_int_eq(ks_gguf_open_mem(buf, n, &g), KS_OK);
    ck_assert_uint_eq(ks_gguf_version(g), version);
    ck_assert_uint_eq(ks_gguf_alignment(g), align);
    ck_assert_uint_eq(ks_gguf_file_size(g), n);
    ck_assert_uint_eq(ks_gguf_data_offset(g) % align, 0);
    ck_assert_uint_eq(n % align, 0);
    /* 13 scalars + replaced + 12 arrays (+ general.alignment for 64). */
    ck_assert_uint_eq(ks_gguf_n_kv(g), 26 + (align == 64));

    ck_assert(ks_gguf_get_u64(g, "v.u8", &u) && u == 200);
    ck_assert(ks_gguf_get_i64(g, "v.i8", &i) && i == -100);
    ck_assert(ks_gguf_get_u64(g, "v.u16", &u) && u == 60000);
    ck_assert(ks_gguf_get_i64(g, "v.i16", &i) && i == -30000);
    ck_assert(ks_gguf_get_u64(g, "v.u32", &u) && u == 4000000000u);
    ck_assert(ks_gguf_get_i64(g, "v.i32", &i) && i == -2000000000);
    ck_assert(ks_gguf_get_f32(g, "v.f32", &f) && f == 1e-5f);
    ck_assert(ks_gguf_get_bool(g, "v.bool", &b) && b);
    ck_assert_str_eq(ks_gguf_get_str(g, "v.str", NULL), "héllo");
    ck_assert(ks_gguf_get_u64(g, "v.u64", &u) && u == UINT64_MAX);
    ck_assert(ks_gguf_get_i64(g, "v.i64", &i) && i == INT64_MIN);
    ck_assert(ks_gguf_get_f64(g, "v.f64", &d) && d == 0.1);
    ck_assert(ks_gguf_get_f32(g, "v.f64", &f) && f == 0.1f);
    s = ks_gguf_get_str(g, "v.nul", &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(s, "x\0y", 4);
    ck_assert(ks_gguf_get_u64(g, "v.replaced", &u) && u == 2);
    ck_assert_uint_eq(ks_gguf_find(g, "v.u8")->type, KS_GGUF_U8);
    ck_assert_uint_eq(ks_gguf_find(g, "v.i64")->type, KS_GGUF_I64);
    ck_assert_str_eq(ks_gguf_kv_at(g, 0)->key,
                     align == 64 ? "general.alignment" : "v.u8");
    ck_assert_str_eq(ks_gguf_kv_at(g, ks_gguf_n_kv(g) - 1)->key, "a.nested");
    ck_assert_ptr_null(ks_gguf_kv_at(g, ks_gguf_n_kv(g)));

    /* Range and type checks of the getters. */
    ck_assert(!ks_gguf_get_u64(g, "v.i8", &u));       /* negative */
    ck_assert(!ks_gguf_get_i64(g, "v.u64", &i));      /* > INT64_MAX */
    ck_assert(!ks_gguf_get_u32(g, "v.u64", (uint32_t *)&u));
    ck_assert(!ks_gguf_get_u64(g, "v.str", &u));
    ck_assert(!ks_gguf_get_f32(g, "v.u32", &f));
    ck_assert(!ks_gguf_get_bool(g, "v.u8", &b));
    ck_assert_ptr_null(ks_gguf_get_str(g, "v.u8", NULL));
    ck_assert_ptr_null(ks_gguf_find(g, "absent"));

    ck_assert(ks_gguf_get_arr(g, "a.u8", &a));
    ck_assert_uint_eq(a.type, KS_GGUF_U8);
    ck_assert_uint_eq(a.n, 4);
    ck_assert_uint_eq(ks_gguf_arr_u64(&a, 3), 6);
    ck_assert_uint_eq(ks_gguf_arr_u64(&a, 4), 0); /* out of range */
    ck_assert(ks_gguf_get_arr(g, "a.i8", &a));
    ck_assert_int_eq(ks_gguf_arr_i64(&a, 0), -128);
    ck_assert_int_eq(ks_gguf_arr_i64(&a, 2), 127);
    ck_assert(ks_gguf_get_arr(g, "a.u16", &a));
    ck_assert_uint_eq(ks_gguf_arr_u64(&a, 1), 65535);
    ck_assert(ks_gguf_get_arr(g, "a.i16", &a));
    ck_assert_int_eq(ks_gguf_arr_i64(&a, 0), -32768);
    ck_assert(ks_gguf_get_arr(g, "a.i32", &a));
    ck_assert_int_eq(ks_gguf_arr_i64(&a, 0), -7);
    ck_assert_int_eq(ks_gguf_arr_i64(&a, 1), 2147483647);
    ck_assert(ks_gguf_get_arr(g, "a.u64", &a));
    ck_assert(ks_gguf_arr_u64(&a, 1) == UINT64_MAX);
    ck_assert(ks_gguf_get_arr(g, "a.i64", &a));
    ck_assert(ks_gguf_arr_i64(&a, 0) == INT64_MIN);
    ck_assert(ks_gguf_get_arr(g, "a.f32", &a));
    ck_assert(ks_gguf_arr_f64(&a, 0) == 1.5 && ks_gguf_arr_f64(&a, 1) == -0.25);
    ck_assert(ks_gguf_get_arr(g, "a.f64", &a));
    ck_assert(ks_gguf_arr_f64(&a, 0) == 1e300);
    ck_assert(ks_gguf_get_arr(g, "a.empty", &a));
    ck_assert_uint_eq(a.n, 0);
    ck_assert(ks_gguf_get_arr(g, "a.str", &a));
    ck_assert_uint_eq(a.type, KS_GGUF_STR);
    ck_assert_uint_eq(a.n, 3);
    s = ks_gguf_arr_str(&a, 0, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 0);
    s = ks_gguf_arr_str(&a, 1, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(s, "a\0b", 3);
    s = ks_gguf_arr_str(&a, 2, &len);
    ck_assert_uint_eq(len, 5);
    ck_assert_mem_eq(s, "hello", 5);
    ck_assert_ptr_null(ks_gguf_arr_str(&a, 3, &len));
    ck_assert_uint_eq(ks_gguf_arr_u64(&a, 0), 0); /* wrong element type */

    ck_assert(ks_gguf_get_arr(g, "a.nested", &a));
    ck_assert_uint_eq(a.type, KS_GGUF_ARR);
    ck_assert_uint_eq(a.n, 2);
    ck_assert_uint_eq(ks_gguf_arr_sub(&a, 0)->n, 2);
    ck_assert_uint_eq(ks_gguf_arr_u64(ks_gguf_arr_sub(&a, 0), 1), 2);
    ck_assert_uint_eq(ks_gguf_arr_sub(&a, 1)->n, 1);
    ck_assert_uint_eq(ks_gguf_arr_u64(ks_gguf_arr_sub(&a, 1), 0), 3);
    ck_assert_ptr_null(ks_gguf_arr_sub(&a, 2));

    ck_assert_uint_eq(ks_gguf_n_tensors(g), 3);
    {
        const ks_gguf_tensor *t0 = ks_gguf_tensor_at(g, 0);
        const ks_gguf_tensor *t1 = ks_gguf_tensor_find(g, "t.q4");
        const ks_gguf_tensor *t2 = ks_gguf_tensor_find(g, "t.q8");

        ck_assert_str_eq(t0->name, "t.f32");
        ck_assert_uint_eq(t0->type, KS_QUANT_F32);
        ck_assert_uint_eq(t0->n_dims, 2);
        ck_assert_uint_eq(t0->ne[0], 5);
        ck_assert_uint_eq(t0->ne[1], 3);
        ck_assert_uint_eq(t0->ne[2], 1);
        ck_assert_uint_eq(t0->ne[3], 1);
        ck_assert_uint_eq(t0->n_elems, 15);
        ck_assert_uint_eq(t0->size_bytes, sizeof f32_data);
        ck_assert_uint_eq(t0->offset, ks_gguf_data_offset(g));
        ck_assert_mem_eq(t0->data, f32_data, sizeof f32_data);
        ck_assert_ptr_nonnull(t1);
        ck_assert_uint_eq(t1->index, 1);
        ck_assert_uint_eq(t1->size_bytes, 72);
        ck_assert_uint_eq((t1->offset - ks_gguf_data_offset(g)) % align, 0);
        ck_assert_uint_eq(t1->offset, ks_gguf_data_offset(g) + 64);
        ck_assert_mem_eq(t1->data, q4_data, sizeof q4_data);
        ck_assert_uint_eq(t2->n_elems, 32);
        ck_assert_uint_eq(t2->ne[1], 1);
        ck_assert_uint_eq((t2->offset - ks_gguf_data_offset(g)) % align, 0);
        ck_assert_mem_eq(t2->data, q8_data, sizeof q8_data);
        ck_assert_ptr_null(ks_gguf_tensor_find(g, "t.none"));
        ck_assert_ptr_null(ks_gguf_tensor_at(g, 3));
        /* No-op on a borrowed buffer. */
        ks_gguf_release_pages(g, t0->data, t0->size_bytes);
        ck_assert_mem_eq(t0->data, f32_data, sizeof f32_data);
    }
    ks_gguf_destroy(g);
    free(buf);
}
END_TEST

START_TEST(round_trip_file)
{
    char            path[] = "/tmp/ks_gguf_test_XXXXXX";
    int             fd = mkstemp(path);
    ks_gguf_writer *w;
    ks_gguf        *g;
    static float    big[4096 * 4];
    uint64_t        ne[2] = { 4096, 4 };
    const ks_gguf_tensor *t;

    ck_assert_int_ge(fd, 0);
    close(fd);
    for (size_t i = 0; i < 4096 * 4; i++)
        big[i] = (float)i;
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str(w, "general.architecture", "x"),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "big", KS_QUANT_F32, 2, ne,
                                               big, sizeof big), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "zeros", KS_QUANT_F16, 1,
                                               ne, NULL, 8192), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_file(w, path), KS_OK);
    ks_gguf_writer_destroy(w);

    ck_assert_int_eq(ks_gguf_open(path, &g), KS_OK);
    ck_assert_str_eq(ks_gguf_path(g), path);
    t = ks_gguf_tensor_find(g, "big");
    ck_assert_mem_eq(t->data, big, sizeof big);
    /* Dropped pages read back from the file. */
    ks_gguf_release_pages(g, t->data, t->size_bytes);
    ck_assert_mem_eq(t->data, big, sizeof big);
    t = ks_gguf_tensor_find(g, "zeros");
    ck_assert_uint_eq(((const uint8_t *)t->data)[8191], 0);
    ks_gguf_destroy(g);

    ck_assert_int_eq(ks_gguf_open("/nonexistent/x.gguf", &g), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "/nonexistent/x.gguf"));
    unlink(path);
}
END_TEST

/* A FIFO, a directory where the output should go: the writer and
 * ks_quantize_file refuse with a message naming it, without blocking and
 * without replacing it (rename() would have swapped the FIFO for a file). */
START_TEST(writer_refuses_non_regular_output)
{
    char            dir[] = "/tmp/ks_gguf_out_XXXXXX";
    char            in[64], fifo[64], sub[64];
    static float    w32[32 * 2];
    uint64_t        ne[2] = { 32, 2 };
    ks_gguf_writer *w;
    struct stat     sb;

    alarm(60);  /* a hang is a failure, not a stuck run */
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(in, sizeof in, "%s/in.gguf", dir);
    snprintf(fifo, sizeof fifo, "%s/out.fifo", dir);
    snprintf(sub, sizeof sub, "%s/out.dir", dir);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    for (size_t i = 0; i < 64; i++)
        w32[i] = (float)i / 7.0f;
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str(w, "general.architecture", "x"), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "w", KS_QUANT_F32, 2, ne, w32,
                                               sizeof w32), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_file(w, in), KS_OK);

    ck_assert_int_eq(ks_gguf_writer_write_file(w, fifo), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), fifo));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "a FIFO"));
    ck_assert_int_eq(ks_gguf_writer_write_file(w, sub), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "a directory"));
    ks_gguf_writer_destroy(w);

    ck_assert_int_eq(ks_quantize_file(in, fifo, "Q8_0", 1), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), fifo));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "not a regular file"));
    ck_assert_int_eq(ks_quantize_file(in, sub, "Q8_0", 1), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(stat(fifo, &sb), 0);
    ck_assert(S_ISFIFO(sb.st_mode));
    ck_assert_int_eq(stat(sub, &sb), 0);
    ck_assert(S_ISDIR(sb.st_mode));

    /* A regular output is still written over. */
    snprintf(sub, sizeof sub, "%s/out.gguf", dir);
    ck_assert_int_eq(ks_quantize_file(in, sub, "Q8_0", 1), KS_OK);
    ck_assert_int_eq(ks_quantize_file(in, sub, "Q8_0", 1), KS_OK);
    ck_assert_int_eq(stat(sub, &sb), 0);
    ck_assert(S_ISREG(sb.st_mode));
    unlink(sub);
    unlink(in);
    unlink(fifo);
    snprintf(sub, sizeof sub, "%s/out.dir", dir);
    rmdir(sub);
    rmdir(dir);
    alarm(0);
}
END_TEST

START_TEST(large_string_array)
{
    enum { N = 262144 };
    ks_gguf_writer *w;
    ks_gguf        *g;
    uint8_t        *buf;
    size_t          n, len;
    char          (*strs)[16] = malloc(N * sizeof(*strs));
    const char    **ptrs = malloc(N * sizeof(*ptrs));
    ks_gguf_arr     a;
    const char     *s;

    for (size_t i = 0; i < N; i++) {
        snprintf(strs[i], sizeof strs[i], "t%zu", i);
        ptrs[i] = strs[i];
    }
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
                                                ptrs, NULL, N), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_mem(w, (void **)&buf, &n), KS_OK);
    ks_gguf_writer_destroy(w);
    ck_assert_int_eq(ks_gguf_open_mem(buf, n, &g), KS_OK);
    ck_assert(ks_gguf_get_arr(g, "tokenizer.ggml.tokens", &a));
    ck_assert_uint_eq(a.n, N);
    s = ks_gguf_arr_str(&a, N - 1, &len);
    ck_assert_uint_eq(len, strlen("t262143"));
    ck_assert_mem_eq(s, "t262143", len);
    s = ks_gguf_arr_str(&a, 12345, &len);
    ck_assert_mem_eq(s, "t12345", len);
    ks_gguf_destroy(g);
    free(buf);
    free(strs);
    free(ptrs);
}
END_TEST

START_TEST(required_and_layer_getters)
{
    ks_gguf_writer *w;
    ks_gguf        *g;
    uint8_t        *buf;
    size_t          n;
    uint64_t        u;
    uint32_t        u32;
    float           f;
    const char     *s;
    static const int32_t per_layer[] = { 4, 8, -1 };

    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "llama.embedding_length", 64),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_i32(w, "neg", -3), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u64(w, "huge", 1ull << 40), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_str(w, "name", "n"), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_f32(w, "eps", 1e-6f), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_arr(w, "kv_heads", KS_GGUF_I32,
                                            per_layer, 3), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_mem(w, (void **)&buf, &n), KS_OK);
    ks_gguf_writer_destroy(w);
    ck_assert_int_eq(ks_gguf_open_mem(buf, n, &g), KS_OK);

    ck_assert_int_eq(ks_gguf_require_u64(g, "llama.embedding_length", &u),
                     KS_OK);
    ck_assert_uint_eq(u, 64);
    ck_assert_int_eq(ks_gguf_require_u64(g, "llama.block_count", &u),
                     KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(),
                                 "missing required metadata key "
                                 "'llama.block_count'"));
    ck_assert_int_eq(ks_gguf_require_u64(g, "neg", &u), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'neg' = -3"));
    ck_assert_int_eq(ks_gguf_require_u32(g, "huge", &u32), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "out of range"));
    ck_assert_int_eq(ks_gguf_require_u64(g, "name", &u), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "has type string"));
    ck_assert_int_eq(ks_gguf_require_f32(g, "eps", &f), KS_OK);
    ck_assert(f == 1e-6f);
    ck_assert_int_eq(ks_gguf_require_str(g, "name", &s), KS_OK);
    ck_assert_str_eq(s, "n");
    ck_assert_int_eq(ks_gguf_require_str(g, "eps", &s), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "has type f32"));

    ck_assert(ks_gguf_get_u64_layer(g, "llama.embedding_length", 7, &u));
    ck_assert_uint_eq(u, 64);
    ck_assert(ks_gguf_get_u64_layer(g, "kv_heads", 1, &u));
    ck_assert_uint_eq(u, 8);
    ck_assert(!ks_gguf_get_u64_layer(g, "kv_heads", 2, &u)); /* negative */
    ck_assert(!ks_gguf_get_u64_layer(g, "kv_heads", 3, &u)); /* past end */
    ks_gguf_destroy(g);
    free(buf);
}
END_TEST

START_TEST(writer_refuses_bad_tensors)
{
    ks_gguf_writer *w;
    uint64_t        ne[2] = { 48, 2 };
    char            longname[80];
    uint8_t         d[64] = { 0 };

    memset(longname, 'a', 64);
    longname[64] = '\0';
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "q", KS_QUANT_Q4_0, 2, ne,
                                               d, 0), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "block size 32"));
    ne[0] = 4;
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, longname, KS_QUANT_F32, 1,
                                               ne, d, 16), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "x", 4, 1, ne, d, 16),
                     KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "x", KS_QUANT_F32, 1, ne, d,
                                               12), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "x", KS_QUANT_F32, 1, ne, d,
                                               16), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "x", KS_QUANT_F32, 1, ne, d,
                                               16), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "duplicate"));
    ck_assert_int_eq(ks_gguf_writer_set_alignment(w, 48), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_gguf_writer_set_version(w, 1), KS_ERR_INVALID_ARG);
    ks_gguf_writer_destroy(w);
    ks_gguf_writer_destroy(NULL);
    ks_gguf_destroy(NULL);
}
END_TEST

/* ---- damage ---- */

#define DAMAGE_TEST(name, body)                                              \
    START_TEST(name)                                                         \
    {                                                                        \
        uint8_t *b;                                                          \
        size_t   n;                                                          \
        make_valid(&b, &n);                                                  \
        {                                                                    \
            body                                                             \
        }                                                                    \
        free(b);                                                             \
    }                                                                        \
    END_TEST

DAMAGE_TEST(valid_file_opens, {
    ks_gguf *g;
    ck_assert_int_eq(ks_gguf_open_mem(b, n, &g), KS_OK);
    ks_gguf_destroy(g);
})

DAMAGE_TEST(truncated_header, {
    expect_fail(b, 0, KS_ERR_CORRUPT, "truncated header: magic");
    expect_fail(b, 3, KS_ERR_CORRUPT, "truncated header: magic");
    expect_fail(b, 6, KS_ERR_CORRUPT, "truncated header: version");
    expect_fail(b, 12, KS_ERR_CORRUPT, "truncated header: tensor count");
    expect_fail(b, 20, KS_ERR_CORRUPT, "truncated header: kv count");
})

DAMAGE_TEST(bad_magic, {
    memcpy(b, "GGML", 4);
    expect_fail(b, n, KS_ERR_CORRUPT, "bad magic: expected 'GGUF'");
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'GGML'"));
})

DAMAGE_TEST(unsupported_versions, {
    put32(b + 4, 1);
    expect_fail(b, n, KS_ERR_UNSUPPORTED, "unsupported GGUF version 1");
    put32(b + 4, 4);
    expect_fail(b, n, KS_ERR_UNSUPPORTED, "unsupported GGUF version 4");
    put32(b + 4, 0);
    expect_fail(b, n, KS_ERR_UNSUPPORTED, "unsupported GGUF version 0");
})

DAMAGE_TEST(byte_swapped, {
    put32(b + 4, 0x03000000u);
    expect_fail(b, n, KS_ERR_UNSUPPORTED, "byte-swapped");
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "0x03000000"));
    put32(b + 4, 3);
    memcpy(b, "FUGG", 4);
    expect_fail(b, n, KS_ERR_UNSUPPORTED, "byte-swapped");
})

DAMAGE_TEST(absurd_counts, {
    put64(b + 16, 1ull << 60);
    expect_fail(b, n, KS_ERR_CORRUPT, "kv count 1152921504606846976 is "
                "impossible");
})

START_TEST(absurd_tensor_count)
{
    uint8_t *b;
    size_t   n;

    make_valid(&b, &n);
    put64(b + 8, UINT64_MAX);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor count 18446744073709551615 is "
                "impossible");
    free(b);
}
END_TEST

DAMAGE_TEST(string_past_end, {
    size_t at = find(b, n, "hello-marker") - 8;
    put64(b + at, 1ull << 40);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'general.name': string of "
                "1099511627776 bytes");
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "past the end"));
    put64(b + at, UINT64_MAX);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'general.name': string of");
})

DAMAGE_TEST(key_past_end, {
    size_t at = find(b, n, "general.name") - 8;
    put64(b + at, n);
    expect_fail(b, n, KS_ERR_CORRUPT, "kv 1 of 7: key of");
})

DAMAGE_TEST(array_past_end, {
    size_t at = kv_value_at(b, n, "arr.u32");
    put64(b + at + 4, 1ull << 62);   /* ×4 bytes overflows */
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'arr.u32': array of "
                "4611686018427387904 u32 elements");
    put64(b + at + 4, 1000);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'arr.u32': array of 1000 u32");
})

DAMAGE_TEST(string_array_past_end, {
    size_t at = kv_value_at(b, n, "arr.tok");
    size_t count = at + 4;
    put64(b + count, 1ull << 61);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'arr.tok': array of "
                "2305843009213693952 strings");
    put64(b + count, 3);
    put64(b + find(b, n, "tok_bb") - 8, 1ull << 50);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'arr.tok': string element 1 of 3");
})

DAMAGE_TEST(unknown_value_type, {
    put32(b + find(b, n, "llama.block_count") + strlen("llama.block_count"),
          13);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'llama.block_count': unknown value "
                "type 13");
})

DAMAGE_TEST(unknown_array_element_type, {
    put32(b + kv_value_at(b, n, "arr.u32"), 77);
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'arr.u32': unknown array element "
                "type 77");
})

DAMAGE_TEST(invalid_bool, {
    b[kv_value_at(b, n, "flag.bool")] = 2;
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'flag.bool': invalid bool 2");
})

DAMAGE_TEST(invalid_bool_in_array, {
    b[kv_value_at(b, n, "arr.bool") + 12 + 1] = 9;
    expect_fail(b, n, KS_ERR_CORRUPT, "key 'arr.bool': invalid bool 9 in "
                "element 1");
})

START_TEST(duplicate_key_raw)
{
    ks_gguf_writer *w;
    uint8_t        *b, v[4] = { 1, 0, 0, 0 };
    size_t          n;

    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "a.key", 1), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_set_u32(w, "other", 1), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_raw_kv(w, "a.key", KS_GGUF_U32, v, 4),
                     KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_mem(w, (void **)&b, &n), KS_OK);
    ks_gguf_writer_destroy(w);
    expect_fail(b, n, KS_ERR_CORRUPT, "duplicate key 'a.key' (kv 0 and kv 2)");
    free(b);
}
END_TEST

DAMAGE_TEST(empty_key, {
    size_t at = find(b, n, "general.name") - 8;
    put64(b + at, 0);
    expect_fail(b, n, KS_ERR_CORRUPT, "kv 1 at offset");
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "empty key"));
})

DAMAGE_TEST(unknown_tensor_type, {
    tinfo t = tensor_at(b, n, "t.q4", 2);
    put32(b + t.type, 4);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': unknown tensor type id "
                "4");
    put32(b + t.type, 1000);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': unknown tensor type id "
                "1000");
})

DAMAGE_TEST(bad_n_dims, {
    tinfo t = tensor_at(b, n, "t.q4", 2);
    put32(b + t.n_dims, 5);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': n_dims = 5, expected "
                "1..4");
    put32(b + t.n_dims, 0);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': n_dims = 0");
})

DAMAGE_TEST(dimension_overflow, {
    tinfo t = tensor_at(b, n, "t.q4", 2);
    put64(b + t.dims, 1ull << 32);
    put64(b + t.dims + 8, 1ull << 32);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': element count "
                "overflows");
    put64(b + t.dims, 0);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': ne[0] = 0");
})

DAMAGE_TEST(size_overflow, {
    /* Element count fits in 63 bits but bytes do not. */
    tinfo t = tensor_at(b, n, "t.f32", 2);
    put64(b + t.dims, 1ull << 31);
    put64(b + t.dims + 8, 1ull << 31);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.f32': byte size of "
                "4611686018427387904 F32 elements overflows");
})

DAMAGE_TEST(ne0_not_block_multiple, {
    tinfo t = tensor_at(b, n, "t.q4", 2);
    put64(b + t.dims, 48);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q4': ne[0] = 48 is not a "
                "multiple of the Q4_0 block size 32");
})

DAMAGE_TEST(tensor_outside_file, {
    tinfo t = tensor_at(b, n, "t.q8", 1);
    put64(b + t.offset, 1ull << 20);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q8': data (34 bytes at "
                "relative offset 1048576");
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "outside the file"));
    put64(b + t.offset, UINT64_MAX - 31);
    expect_fail(b, n, KS_ERR_CORRUPT, "outside the file");
})

DAMAGE_TEST(truncated_data, {
    expect_fail(b, n - 40, KS_ERR_CORRUPT, "tensor 't.q8': data");
})

DAMAGE_TEST(misaligned_offset, {
    tinfo t = tensor_at(b, n, "t.q8", 1);
    put64(b + t.offset, get64(b + t.offset) + 4);
    expect_fail(b, n, KS_ERR_CORRUPT, "tensor 't.q8': offset 164 is not a "
                "multiple of the alignment 32");
})

DAMAGE_TEST(overlapping_tensors, {
    tinfo t = tensor_at(b, n, "t.q8", 1);
    put64(b + t.offset, 64);  /* inside t.q4 at 64..135 */
    expect_fail(b, n, KS_ERR_CORRUPT, "tensors 't.q4' and 't.q8' overlap");
})

DAMAGE_TEST(duplicate_tensor_names, {
    memcpy(b + find(b, n, "t.q8"), "t.q4", 4);
    expect_fail(b, n, KS_ERR_CORRUPT, "duplicate tensor name 't.q4' (tensors "
                "1 and 2)");
})

DAMAGE_TEST(truncated_tensor_info, {
    tinfo t = tensor_at(b, n, "t.q8", 1);
    expect_fail(b, t.dims + 3, KS_ERR_CORRUPT, "tensor 't.q8': shape, type "
                "and offset");
    expect_fail(b, t.n_dims - 4 - 5, KS_ERR_CORRUPT, "tensor 2 of 3: name");
})

START_TEST(long_tensor_name)
{
    bbuf x;
    char name[70];

    memset(name, 'n', 64);
    name[64] = '\0';
    bheader(&x, 1, 0);
    bstr(&x, name);
    b32(&x, 1);
    b64(&x, 4);
    b32(&x, KS_QUANT_F32);
    b64(&x, 0);
    memset(x.b + x.n, 0, 64);
    x.n += 64;
    expect_fail(x.b, x.n, KS_ERR_CORRUPT, "is 64 bytes long; names must be "
                "shorter than 64 bytes");
}
END_TEST

START_TEST(bad_alignment)
{
    bbuf x;

    bheader(&x, 0, 1);
    bstr(&x, "general.alignment");
    b32(&x, KS_GGUF_U64);
    b64(&x, 32);
    expect_fail(x.b, x.n, KS_ERR_CORRUPT, "general.alignment has type u64, "
                "expected u32");
    bheader(&x, 0, 1);
    bstr(&x, "general.alignment");
    b32(&x, KS_GGUF_U32);
    b32(&x, 48);
    expect_fail(x.b, x.n, KS_ERR_CORRUPT, "general.alignment = 48 is not a "
                "power of two");
    x.n -= 4;
    b32(&x, 0);
    expect_fail(x.b, x.n, KS_ERR_CORRUPT, "general.alignment = 0");
}
END_TEST

START_TEST(nested_too_deep)
{
    bbuf     x;
    ks_gguf *g;

    bheader(&x, 0, 1);
    bstr(&x, "deep");
    b32(&x, KS_GGUF_ARR);
    for (int i = 0; i < 20; i++) {
        b32(&x, KS_GGUF_ARR);
        b64(&x, 1);
    }
    b32(&x, KS_GGUF_U8);
    b64(&x, 0);
    expect_fail(x.b, x.n, KS_ERR_CORRUPT, "key 'deep': arrays nested more "
                "than 8 levels deep");

    /* Eight levels are fine. */
    bheader(&x, 0, 1);
    bstr(&x, "deep");
    b32(&x, KS_GGUF_ARR);
    for (int i = 0; i < 7; i++) {
        b32(&x, KS_GGUF_ARR);
        b64(&x, 1);
    }
    b32(&x, KS_GGUF_U8);
    b64(&x, 1);
    x.b[x.n++] = 5;
    ck_assert_int_eq(ks_gguf_open_mem(x.b, x.n, &g), KS_OK);
    ks_gguf_destroy(g);
}
END_TEST

/* ---- real files ---- */

static char shared_models[512];

static void
open_real(const char *file, ks_gguf **g)
{
    char path[700];

    snprintf(path, sizeof path, "%s/%s", shared_models, file);
    ck_assert_msg(ks_gguf_open(path, g) == KS_OK, "%s: %s", path,
                  ks_last_error());
}

START_TEST(real_files)
{
    static const char *files[] = {
        "stories260K-f32.gguf", "stories260K-Q4_0.gguf",
        "stories260K-Q4_K_M.gguf", "stories260K-Q8_0.gguf",
    };
    ks_gguf     *g;
    ks_gguf_arr  a;
    size_t       len;
    const char  *s;
    uint32_t     u;

    for (size_t f = 0; f < 4; f++) {
        open_real(files[f], &g);
        ck_assert_str_eq(ks_gguf_get_str(g, "general.architecture", NULL),
                         "llama");
        ck_assert(ks_gguf_get_arr(g, "tokenizer.ggml.tokens", &a));
        ck_assert_uint_eq(a.type, KS_GGUF_STR);
        ck_assert_uint_eq(a.n, 512);
        s = ks_gguf_arr_str(&a, 1, &len);
        ck_assert_uint_eq(len, 3);
        ck_assert_mem_eq(s, "<s>", 3);
        ck_assert_int_eq(ks_gguf_require_u32(g, "llama.block_count", &u),
                         KS_OK);
        ck_assert_uint_eq(u, 5);
        ck_assert_int_eq(ks_gguf_require_u32(g, "llama.embedding_length", &u),
                         KS_OK);
        ck_assert_uint_eq(u, 64);
        ck_assert_ptr_nonnull(ks_gguf_tensor_find(g, "token_embd.weight"));
        ck_assert_uint_eq(ks_gguf_tensor_find(g, "token_embd.weight")->ne[1],
                          512);
        for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
            const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);

            ck_assert_uint_le(t->offset + t->size_bytes,
                              ks_gguf_file_size(g));
        }
        if (f == 0) {
            ck_assert_uint_eq(ks_gguf_n_tensors(g), 48);
            ck_assert_uint_eq(ks_gguf_tensor_find(g, "blk.0.attn_q.weight")
                              ->type, KS_QUANT_F32);
        }
        ks_gguf_destroy(g);
    }
}
END_TEST

START_TEST(inspect_real_file)
{
    char  path[700];
    FILE *f = tmpfile();
    char  text[1 << 16];
    size_t n;

    snprintf(path, sizeof path, "%s/stories260K-f32.gguf", shared_models);
    ck_assert_int_eq(ks_inspect_file(path, f, 0), KS_OK);
    rewind(f);
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "tensors      48"));
    ck_assert_ptr_nonnull(strstr(text, "tokenizer.ggml.tokens = [string "
                                       "\xc3\x97 512] \"<unk>\", \"<s>\""));
    ck_assert_ptr_nonnull(strstr(text, "architecture  \"llama\""));
    ck_assert_ptr_nonnull(strstr(text, "F32: 48"));
    ck_assert_ptr_nonnull(strstr(text, "bits/weight   32.00"));
}
END_TEST

/* ---- info printer on a synthetic file ---- */

static char *
inspect_to_string(const char *path, unsigned flags, ks_status *st)
{
    FILE *f = tmpfile();
    long  n;
    char *s;

    *st = ks_inspect_file(path, f, flags);
    n = ftell(f);
    rewind(f);
    s = calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

START_TEST(inspect_output)
{
    char            path[] = "/tmp/ks_gguf_info_XXXXXX";
    int             fd = mkstemp(path);
    ks_gguf_writer *w;
    char            tmpl[5000];
    char            toks[1000][8];
    const char     *ptrs[1000];
    static float    wts[256 * 4];
    static uint8_t  q4[256 / 32 * 18 * 2];
    uint64_t        ne[2] = { 256, 4 }, ne_q[2] = { 256, 2 };
    ks_status       st;
    char           *out;
    int             depth = 0;

    ck_assert_int_ge(fd, 0);
    close(fd);
    memset(tmpl, 'x', sizeof tmpl);
    memcpy(tmpl, "{% for m in messages %}\n", 24);
    for (int i = 0; i < 1000; i++) {
        snprintf(toks[i], sizeof toks[i], "<%d>", i);
        ptrs[i] = toks[i];
    }
    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ks_gguf_writer_set_str(w, "general.architecture", "llama");
    ks_gguf_writer_set_str(w, "general.name", "Tiny \"test\" model");
    ks_gguf_writer_set_u32(w, "llama.block_count", 1);
    ks_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    ks_gguf_writer_set_bool(w, "x.flag", false);
    ks_gguf_writer_set_i32(w, "x.neg", -12);
    ks_gguf_writer_set_str_n(w, "tokenizer.chat_template", tmpl, sizeof tmpl);
    ks_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", ptrs, NULL, 1000);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "w.f32", KS_QUANT_F32, 2, ne,
                                               wts, sizeof wts), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "w.q4", KS_QUANT_Q4_0, 2,
                                               ne_q, q4, sizeof q4), KS_OK);
    ck_assert_int_eq(ks_gguf_writer_write_file(w, path), KS_OK);
    ks_gguf_writer_destroy(w);

    out = inspect_to_string(path, 0, &st);
    ck_assert_int_eq(st, KS_OK);
    ck_assert_ptr_nonnull(strstr(out, "version      3\n"));
    ck_assert_ptr_nonnull(strstr(out, "tensors      2\n"));
    ck_assert_ptr_nonnull(strstr(out, "metadata     8 keys\n"));
    ck_assert_ptr_nonnull(strstr(out, "alignment    32\n"));
    ck_assert_ptr_nonnull(strstr(out, "tokenizer.ggml.tokens = [string "
                                      "\xc3\x97 1000] \"<0>\", \"<1>\", "
                                      "\"<2>\", \"<3>\", \"<4>\", ...\n"));
    ck_assert_ptr_nonnull(strstr(out, "tokenizer.chat_template = \"{% for m "
                                      "in messages %}\\n"));
    ck_assert_ptr_nonnull(strstr(out, "\xe2\x80\xa6(5000 bytes)"));
    ck_assert_ptr_nonnull(strstr(out, "layer_norm_rms_epsilon = 1e-05\n"));
    ck_assert_ptr_nonnull(strstr(out, "x.flag = false\n"));
    ck_assert_ptr_nonnull(strstr(out, "x.neg = -12\n"));
    ck_assert_ptr_nonnull(strstr(out, "w.f32"));
    ck_assert_ptr_nonnull(strstr(out, "256 x 4"));
    ck_assert_ptr_nonnull(strstr(out, "Q4_0"));
    ck_assert_ptr_nonnull(strstr(out, "parameters    1536 "));
    /* (4096 + 288) bytes * 8 / 1536 */
    ck_assert_ptr_nonnull(strstr(out, "bits/weight   22.83\n"));
    ck_assert_ptr_nonnull(strstr(out, "tensor types  F32: 1, Q4_0: 1\n"));
    ck_assert_ptr_nonnull(strstr(out, "name          \"Tiny \\\"test\\\" "
                                      "model\""));
    free(out);

    out = inspect_to_string(path, KS_INSPECT_JSON, &st);
    ck_assert_int_eq(st, KS_OK);
    ck_assert_int_eq(out[0], '{');
    ck_assert_ptr_nonnull(strstr(out, "\"tensor_count\": 2,"));
    ck_assert_ptr_nonnull(strstr(out, "{\"key\": \"tokenizer.ggml.tokens\", "
                                      "\"type\": \"array\", \"value\": "
                                      "{\"elem_type\": "
                                      "\"string\", \"count\": 1000, "
                                      "\"truncated\": true, \"values\": "
                                      "[\"<0>\""));
    ck_assert_ptr_nonnull(strstr(out, "\"shape\": [256, 2]"));
    ck_assert_ptr_nonnull(strstr(out, "\"types\": {\"F32\": 1, \"Q4_0\": 1}"));
    ck_assert_ptr_nonnull(strstr(out, "\"parameters\": 1536"));
    ck_assert_ptr_nonnull(strstr(out, "(5000 bytes)\""));
    /* Braces and brackets balance outside strings. */
    for (const char *p = out, *in = NULL; *p; p++) {
        if (in) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in = NULL;
            continue;
        }
        if (*p == '"')
            in = p;
        else if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        ck_assert_int_ge(depth, 0);
    }
    ck_assert_int_eq(depth, 0);
    free(out);

    /* A damaged file: the error, and nothing printed. */
    {
        FILE *f = fopen(path, "r+b");
        char *o;

        fwrite("XXXX", 1, 4, f);
        fclose(f);
        o = inspect_to_string(path, 0, &st);
        ck_assert_int_eq(st, KS_ERR_CORRUPT);
        ck_assert_ptr_nonnull(strstr(ks_last_error(), "bad magic"));
        ck_assert_str_eq(o, "");
        free(o);
    }
    ck_assert_int_eq(ks_inspect_file(path, stdout, 8), KS_ERR_INVALID_ARG);
    unlink(path);
}
END_TEST

static Suite *
gguf_suite(bool have_real)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("round_trip");

    tcase_add_loop_test(tc, round_trip_all_types, 0, 4);
    tcase_add_test(tc, round_trip_file);
    tcase_add_test(tc, large_string_array);
    tcase_add_test(tc, required_and_layer_getters);
    tcase_add_test(tc, writer_refuses_bad_tensors);
    tcase_add_test(tc, writer_refuses_non_regular_output);
    suite_add_tcase(s, tc);

    tc = tcase_create("damage");
    tcase_add_test(tc, valid_file_opens);
    tcase_add_test(tc, truncated_header);
    tcase_add_test(tc, bad_magic);
    tcase_add_test(tc, unsupported_versions);
    tcase_add_test(tc, byte_swapped);
    tcase_add_test(tc, absurd_counts);
    tcase_add_test(tc, absurd_tensor_count);
    tcase_add_test(tc, string_past_end);
    tcase_add_test(tc, key_past_end);
    tcase_add_test(tc, array_past_end);
    tcase_add_test(tc, string_array_past_end);
    tcase_add_test(tc, unknown_value_type);
    tcase_add_test(tc, unknown_array_element_type);
    tcase_add_test(tc, invalid_bool);
    tcase_add_test(tc, invalid_bool_in_array);
    tcase_add_test(tc, duplicate_key_raw);
    tcase_add_test(tc, empty_key);
    tcase_add_test(tc, unknown_tensor_type);
    tcase_add_test(tc, bad_n_dims);
    tcase_add_test(tc, dimension_overflow);
    tcase_add_test(tc, size_overflow);
    tcase_add_test(tc, ne0_not_block_multiple);
    tcase_add_test(tc, tensor_outside_file);
    tcase_add_test(tc, truncated_data);
    tcase_add_test(tc, misaligned_offset);
    tcase_add_test(tc, overlapping_tensors);
    tcase_add_test(tc, duplicate_tensor_names);
    tcase_add_test(tc, truncated_tensor_info);
    tcase_add_test(tc, long_tensor_name);
    tcase_add_test(tc, bad_alignment);
    tcase_add_test(tc, nested_too_deep);
    suite_add_tcase(s, tc);

    tc = tcase_create("inspect");
    tcase_add_test(tc, inspect_output);
    suite_add_tcase(s, tc);

    if (have_real) {
        tc = tcase_create("real_files");
        tcase_add_test(tc, real_files);
        tcase_add_test(tc, inspect_real_file);
        suite_add_tcase(s, tc);
    }
    return s;
}

int
main(void)
{
    const char *shared = getenv("KESTREL_SHARED_DIR");
    bool        have_real = false;
    SRunner    *sr;
    int         failed;

    if (shared && *shared) {
        char probe[700];

        snprintf(shared_models, sizeof shared_models,
                 "%s/models/stories260K", shared);
        snprintf(probe, sizeof probe, "%s/stories260K-f32.gguf",
                 shared_models);
        have_real = access(probe, R_OK) == 0;
    }
    if (!have_real)
        printf("gguf: stories260K files not found under "
               "$KESTREL_SHARED_DIR/models/stories260K; skipping the "
               "real-file tests\n");
    sr = srunner_create(gguf_suite(have_real));
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
