/* Layer placement: the --split parser, --gpu-layers, and the automatic
 * choice under costs and memory budgets (scheduler/placement.c). */
#include <check.h>
#include <string.h>

#include "kestrel/kestrel.h"
#include "scheduler/placement.h"

static void
expect(const ks_plan *p, const char *text)
{
    char buf[160];

    ks_plan_format(p, buf, sizeof buf);
    ck_assert_str_eq(buf, text);
}

START_TEST(split_parses_maps)
{
    ks_plan p;

    ck_assert_int_eq(ks_place_parse_split("cpu:0-9,vulkan:10-29", 30, &p), KS_OK);
    ck_assert_uint_eq(p.n, 2);
    ck_assert_str_eq(p.r[0].kind, "cpu");
    ck_assert_uint_eq(p.r[0].l0, 0);
    ck_assert_uint_eq(p.r[0].l1, 10);
    ck_assert(!p.r[0].head);
    ck_assert_str_eq(p.r[1].kind, "vulkan");
    ck_assert_uint_eq(p.r[1].l1, 30);
    ck_assert(p.r[1].head);
    expect(&p, "cpu:0-9,vulkan:10-29+head");

    /* one-layer ranges, case, neighbours of one kind merged */
    ck_assert_int_eq(ks_place_parse_split("VULKAN:0,cpu:1-2,cpu:3,vulkan:4", 5, &p), KS_OK);
    expect(&p, "vulkan:0,cpu:1-3,vulkan:4+head");
}
END_TEST

START_TEST(split_rejects_bad_maps)
{
    static const char *bad[] = {
        "",                     /* empty */
        "cpu:0-3",              /* layers 4-5 not placed */
        "cpu:1-5",              /* does not start at 0 */
        "cpu:0-2,vulkan:2-5",   /* overlap */
        "cpu:0-2,vulkan:4-5",   /* gap */
        "cpu:0-6",              /* past the last layer */
        "cpu:3-1,vulkan:0-5",   /* reversed */
        "cpu0-5",               /* no colon */
        "cpu:x-5",              /* no number */
        "cpu:0-5;",             /* trailing junk */
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ks_plan p;
        ck_assert_msg(ks_place_parse_split(bad[i], 6, &p) == KS_ERR_INVALID_ARG, "'%s'",
                      bad[i]);
        ck_assert_msg(strstr(ks_last_error(), "--split") != NULL, "%s", ks_last_error());
    }
}
END_TEST

START_TEST(gpu_layers_takes_the_last)
{
    ks_plan p;

    ks_place_gpu_layers(30, 12, &p);
    expect(&p, "cpu:0-17,vulkan:18-29+head");
    ks_place_gpu_layers(30, 0, &p);
    expect(&p, "cpu:0-29+head");
    ks_place_gpu_layers(30, 99, &p);
    expect(&p, "vulkan:0-29+head");
}
END_TEST

START_TEST(auto_weighs_costs_and_memory)
{
    uint64_t lb[10];
    ks_place_cost c = { .cpu_layer_ms = 1.0, .gpu_layer_ms = 0.5, .cpu_head_ms = 2.0,
                        .gpu_head_ms = 1.0, .hop_ms = 0.1, .gpu_ok = true,
                        .gpu_budget = 1000, .layer_bytes = lb, .head_bytes = 100,
                        .fixed_bytes = 50 };
    ks_plan p;
    double est;

    for (int i = 0; i < 10; i++)
        lb[i] = 100;
    /* a faster GPU that takes 8 layers besides head and scratch: the last 8 */
    ks_place_auto(10, &c, &p, &est);
    expect(&p, "cpu:0-1,vulkan:2-9+head");
    ck_assert_double_eq_tol(est, 2 * 1.0 + 8 * 0.5 + 1.0 + 0.2, 1e-9);
    /* all fit */
    c.gpu_budget = 10000;
    ks_place_auto(10, &c, &p, &est);
    expect(&p, "vulkan:0-9+head");
    ck_assert_double_eq_tol(est, 10 * 0.5 + 1.0 + 0.1, 1e-9);
    /* a GPU slower at the head only: just the head moves, with the last
     * layer (the head always follows the last layer) */
    c.gpu_layer_ms = 1.2;
    c.gpu_head_ms = 0.5;
    ks_place_auto(10, &c, &p, &est);
    expect(&p, "cpu:0-8,vulkan:9+head");
    /* a slower GPU (lavapipe beside the CPU): everything stays on the CPU */
    c.gpu_layer_ms = 1.5;
    c.gpu_head_ms = 3.0;
    ks_place_auto(10, &c, &p, &est);
    expect(&p, "cpu:0-9+head");
    ck_assert_double_eq_tol(est, 12.0, 1e-9);
    /* no GPU */
    c.gpu_layer_ms = 0.1;
    c.gpu_ok = false;
    ks_place_auto(10, &c, &p, NULL);
    expect(&p, "cpu:0-9+head");
    /* a GPU too small for even the head */
    c.gpu_ok = true;
    c.gpu_budget = 120;
    ks_place_auto(10, &c, &p, NULL);
    expect(&p, "cpu:0-9+head");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("placement");
    TCase *tc = tcase_create("placement");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, split_parses_maps);
    tcase_add_test(tc, split_rejects_bad_maps);
    tcase_add_test(tc, gpu_layers_takes_the_last);
    tcase_add_test(tc, auto_weighs_costs_and_memory);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
