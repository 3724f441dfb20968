/* The base services every layer shares (driver/base.h, driver/qblock.h):
 * FNV-1a against the published test vectors, half <-> float on the values
 * that name each case, the environment readers, the NULL-argument message
 * and the one quant block table as the runtime sees it. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "driver/qblock.h"
#include "runtime/qtype.h"

START_TEST(fnv1a_test_vectors)
{
    /* FNV-1a 64-bit: http://www.isthe.com/chongo/tech/comp/fnv/ */
    ck_assert_uint_eq(ks_fnv1a(KS_FNV1A_INIT, "", 0), 0xcbf29ce484222325ull);
    ck_assert_uint_eq(ks_fnv1a(KS_FNV1A_INIT, "a", 1), 0xaf63dc4c8601ec8cull);
    ck_assert_uint_eq(ks_fnv1a(KS_FNV1A_INIT, "foobar", 6), 0x85944171f73967e8ull);
    /* continuing from a prefix's hash is hashing the whole */
    ck_assert_uint_eq(ks_fnv1a(ks_fnv1a(KS_FNV1A_INIT, "foo", 3), "bar", 3),
                      0x85944171f73967e8ull);
}
END_TEST

START_TEST(half_float_cases)
{
    static const struct { uint16_t h; float f; } cases[] = {
        { 0x0000, 0.0f }, { 0x3c00, 1.0f }, { 0xc000, -2.0f },
        { 0x7bff, 65504.0f },            /* largest finite */
        { 0x0400, 0x1p-14f },            /* smallest normal */
        { 0x0001, 0x1p-24f },            /* smallest subnormal */
        { 0x3555, 0.333251953125f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_float_eq(ks_h2f(cases[i].h), cases[i].f);
        ck_assert_uint_eq(ks_f2h(cases[i].f), cases[i].h);
    }
    ck_assert(signbit(ks_h2f(0x8000)) && ks_h2f(0x8000) == 0.0f);
    ck_assert(isinf(ks_h2f(0x7c00)) && isnan(ks_h2f(0x7e00)));
    ck_assert_uint_eq(ks_f2h(1e6f), 0x7c00);       /* overflow: inf */
    ck_assert_uint_eq(ks_f2h(1.0f + 0x1p-11f), 0x3c00); /* tie to even */
    ck_assert_uint_eq(ks_f2h(0x1p-26f), 0x0000);   /* below half the least */
    /* every half survives a round trip through float */
    for (uint32_t h = 0; h < 0x10000; h++)
        if ((h & 0x7c00) != 0x7c00 || !(h & 0x3ff))
            ck_assert_uint_eq(ks_f2h(ks_h2f((uint16_t)h)), h);
}
END_TEST

START_TEST(env_readers)
{
    setenv("KS_TEST_ENV", "", 1);
    ck_assert_ptr_null(ks_env_str("KS_TEST_ENV"));
    ck_assert(!ks_env_flag("KS_TEST_ENV"));
    setenv("KS_TEST_ENV", "0", 1);
    ck_assert_str_eq(ks_env_str("KS_TEST_ENV"), "0");
    ck_assert(!ks_env_flag("KS_TEST_ENV"));
    setenv("KS_TEST_ENV", "1", 1);
    ck_assert(ks_env_flag("KS_TEST_ENV"));
    setenv("KS_TEST_ENV", "yes", 1);
    ck_assert(ks_env_flag("KS_TEST_ENV"));
    unsetenv("KS_TEST_ENV");
    ck_assert_ptr_null(ks_env_str("KS_TEST_ENV"));
    ck_assert(!ks_env_flag("KS_TEST_ENV"));
}
END_TEST

START_TEST(null_arg_message)
{
    ck_assert_int_eq(ks_null_arg("ks_model_load", "path"), KS_ERR_INVALID_ARG);
    ck_assert_str_eq(ks_last_error(), "ks_model_load: argument 'path' is NULL");
}
END_TEST

START_TEST(one_block_table)
{
    const ks_qblock *b = ks_qblock_get(KS_QBLOCK_Q4_K);

    /* spot checks against ggml's type_traits */
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->name, "Q4_K");
    ck_assert_uint_eq(b->block_elems, 256);
    ck_assert_uint_eq(b->block_bytes, 144);
    ck_assert_uint_eq(ks_qblock_get(KS_QBLOCK_Q8_0)->block_bytes, 34);
    ck_assert_ptr_null(ks_qblock_get(4));   /* Q4_2, removed from ggml */
    ck_assert_ptr_null(ks_qblock_get(KS_QBLOCK_COUNT));
    /* the runtime reads the same facts */
    for (uint32_t t = 0; t <= KS_QBLOCK_COUNT; t++) {
        const ks_qtype_info *q = ks_qtype_get(t);

        b = ks_qblock_get(t);
        ck_assert_int_eq(q != NULL, b != NULL);
        if (!b)
            continue;
        ck_assert_str_eq(q->name, b->name);
        ck_assert_uint_eq(q->block_elems, b->block_elems);
        ck_assert_uint_eq(q->block_bytes, b->block_bytes);
    }
    ck_assert(ks_qtype_get(KS_QUANT_Q6_K)->cpu);
    ck_assert(!ks_qtype_get(KS_QUANT_IQ2_XXS)->cpu);
}
END_TEST

static Suite *
base_suite(void)
{
    Suite *s = suite_create("base");
    TCase *tc = tcase_create("shared helpers");

    tcase_add_test(tc, fnv1a_test_vectors);
    tcase_add_test(tc, half_float_cases);
    tcase_add_test(tc, env_readers);
    tcase_add_test(tc, null_arg_message);
    tcase_add_test(tc, one_block_table);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(base_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
