/* Telemetry on the fake sysfs trees in tests/data/sysfs/<board>/ and on
 * trees the tests build or mutate in a temporary copy. Files are rewritten
 * in place (same inode), as sysfs values change under a kept descriptor. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/telemetry.h"

#ifndef KS_SYSFS_DATA
#error "KS_SYSFS_DATA must name tests/data/sysfs"
#endif

#define NS_PER_S 1000000000ull

/* ---- helpers ----------------------------------------------------------- */

static uint64_t fake_ns;

static uint64_t
fake_clock(void *ctx)
{
    (void)ctx;
    return fake_ns;
}

static ks_telemetry *
open_at(const char *root, bool reopen)
{
    ks_telem_params p = { 0 };
    ks_telemetry *t = NULL;

    p.root = root;
    p.now_ns = fake_clock;
    p.reopen_files = reopen;
    ck_assert_int_eq(ks_telemetry_open_ex(&p, &t), KS_OK);
    ck_assert_ptr_nonnull(t);
    return t;
}

static const char *
board(const char *name)
{
    static char buf[1024];

    snprintf(buf, sizeof buf, "%s/%s", KS_SYSFS_DATA, name);
    return buf;
}

static void
write_text(const char *root, const char *rel, const char *text)
{
    char path[2048];
    FILE *f;

    snprintf(path, sizeof path, "%s/sys/class/%s", root, rel);
    f = fopen(path, "w");   /* truncates in place: same inode */
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static void
mkdirs(const char *root, const char *rel)
{
    char path[2048];

    snprintf(path, sizeof path, "%s/sys/class/%s", root, rel);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    mkdir(path, 0755);
}

static void
remove_rel(const char *root, const char *rel)
{
    char path[2048];

    snprintf(path, sizeof path, "%s/sys/class/%s", root, rel);
    ck_assert_msg(remove(path) == 0, "remove %s: %s", path, strerror(errno));
}

static void
copy_tree_rec(const char *src, const char *dst)
{
    struct stat st;

    ck_assert_int_eq(lstat(src, &st), 0);
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(src);
        struct dirent *e;

        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(mkdir(dst, 0755), 0);
        while ((e = readdir(d)) != NULL) {
            char s[2048], t[2048];

            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(s, sizeof s, "%s/%s", src, e->d_name);
            snprintf(t, sizeof t, "%s/%s", dst, e->d_name);
            copy_tree_rec(s, t);
        }
        closedir(d);
    } else {
        char buf[4096];
        ssize_t n;
        int in = open(src, O_RDONLY), out;

        ck_assert_int_ge(in, 0);
        out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ck_assert_int_ge(out, 0);
        while ((n = read(in, buf, sizeof buf)) > 0)
            ck_assert_int_eq(write(out, buf, (size_t)n), n);
        close(in);
        close(out);
    }
}

/* A private copy of a board's tree (or an empty dir for NULL). */
static char *
tmp_tree(const char *name)
{
    char tmpl[] = "/tmp/ks-telem-XXXXXX";
    char *dir = mkdtemp(tmpl);
    char *root;

    ck_assert_ptr_nonnull(dir);
    root = malloc(strlen(dir) + 8);
    ck_assert_ptr_nonnull(root);
    sprintf(root, "%s/root", dir);
    if (name)
        copy_tree_rec(board(name), root);
    else
        ck_assert_int_eq(mkdir(root, 0755), 0);
    return root;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
rm_tree(char *root)
{
    char *slash = strrchr(root, '/');

    *slash = '\0';  /* the mkdtemp directory above root */
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(root);
}

static char *
describe(const ks_telemetry *t, bool json)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    ck_assert_ptr_nonnull(f);
    if (json)
        ks_telemetry_describe_json(t, 5000, f);
    else
        ks_telemetry_describe(t, 5000, f);
    fclose(f);
    return buf;
}

static int
find_zone(const ks_telem_info *in, const char *name)
{
    for (uint32_t i = 0; i < in->n_zones; i++)
        if (!strcmp(in->zones[i].name, name))
            return (int)i;
    return -1;
}

static int
find_power(const ks_telem_info *in, const char *name)
{
    for (uint32_t i = 0; i < in->n_power; i++)
        if (!strcmp(in->power[i].name, name))
            return (int)i;
    return -1;
}

static int
find_power_node(const ks_telem_info *in, const char *node)
{
    for (uint32_t i = 0; i < in->n_power; i++)
        if (!strcmp(in->power[i].node, node))
            return (int)i;
    return -1;
}

static int
find_freq(const ks_telem_info *in, const char *name)
{
    for (uint32_t i = 0; i < in->n_freq; i++)
        if (!strcmp(in->freq[i].name, name))
            return (int)i;
    return -1;
}

/* ---- boards ------------------------------------------------------------ */

START_TEST(rpi5_board)
{
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    char *text;

    fake_ns = 10 * NS_PER_S;
    t = open_at(board("rpi5"), false);
    in = ks_telemetry_get_info(t);
    ck_assert_int_eq(ks_telemetry_sample(t, &s), KS_OK);

    ck_assert_uint_eq(in->n_zones, 1);
    ck_assert_str_eq(in->zones[0].name, "cpu-thermal");
    ck_assert_str_eq(in->zones[0].node, "thermal_zone0");
    ck_assert_int_eq(in->zones[0].cls, KS_TELEM_CPU);
    ck_assert_str_eq(in->zones[0].policy, "step_wise");
    ck_assert_uint_eq(in->zones[0].n_trips, 5);
    ck_assert_int_eq(in->zones[0].trips[0].type, KS_TRIP_CRITICAL);
    ck_assert_int_eq(in->zones[0].trips[0].temp_mc, 110000);
    ck_assert_int_eq(in->zones[0].trips[3].type, KS_TRIP_ACTIVE);
    ck_assert_int_eq(in->zones[0].trips[3].temp_mc, 67500);
    ck_assert_int_eq(in->zones[0].trips[3].hyst_mc, 5000);
    ck_assert_uint_eq(s.n_zones, 1);
    ck_assert(s.zone_temp[0].valid && !s.zone_temp[0].stale);
    ck_assert_int_eq(s.zone_temp[0].temp_mc, 52650);
    ck_assert_uint_eq(s.zone_temp[0].read_ns, 10 * NS_PER_S);

    ck_assert_uint_eq(in->n_cooling, 1);
    ck_assert_str_eq(in->cooling[0].name, "pwm-fan");
    ck_assert_int_eq(in->cooling[0].max_state, 4);
    ck_assert_int_eq(s.cooling_state[0].value, 1);

    /* rpi_volt has voltages only and the fan hwmon has no power: the Pi 5
     * has no power sensor (reference section 2). */
    ck_assert_uint_eq(in->n_power, 0);
    ck_assert(!s.system_power_mw.valid);
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_NONE);
    ck_assert_uint_eq(in->n_supplies, 0);
    ck_assert(!s.has_battery);
    ck_assert(!s.battery_pct.valid);

    ck_assert_uint_eq(in->n_fans, 1);
    ck_assert_str_eq(in->fans[0].name, "pwmfan:fan1");
    ck_assert_int_eq(s.fan_rpm[0].value, 2943);
    ck_assert(in->has_undervolt);
    ck_assert(s.undervolt.valid);
    ck_assert_int_eq(s.undervolt.value, 0);

    /* V3D through gpu_stats on card0; card1 (vc4) and the connector are
     * not GPUs with statistics. */
    ck_assert_uint_eq(in->n_freq, 1);
    ck_assert_str_eq(in->freq[0].name, "v3d:card0");
    ck_assert_int_eq(in->freq[0].kind, KS_FREQ_V3D);
    ck_assert_int_eq(in->freq[0].cls, KS_TELEM_GPU);
    ck_assert(in->freq[0].has_load && !in->freq[0].has_freq);
    ck_assert(!s.freq[0].cur_hz.valid);

    ck_assert_int_eq(s.hottest_zone, 0);
    ck_assert_int_eq(s.hottest.temp_mc, 52650);
    ck_assert_int_eq(s.passive_zone, -1);   /* only a critical trip */
    ck_assert(!s.passive_trip.valid);
    ck_assert(s.critical_trip.valid);
    ck_assert_int_eq(s.critical_trip.temp_mc, 110000);

    text = describe(t, false);
    ck_assert_ptr_nonnull(strstr(text, "cpu-thermal"));
    ck_assert_ptr_nonnull(strstr(text, " °C, critical 110.0 °C\n"));
    ck_assert_ptr_nonnull(strstr(text, "\n  no power sensors\n"));
    ck_assert_ptr_nonnull(strstr(text, "no battery"));
    ck_assert_ptr_nonnull(strstr(text, "vcgencmd"));
    free(text);
    ks_telemetry_destroy(t);
}
END_TEST

START_TEST(rpi5_v3d_load)
{
    char *root = tmp_tree("rpi5");
    ks_telemetry *t;
    ks_telem_sample s;

    fake_ns = NS_PER_S;
    t = open_at(root, false);
    /* One second later by the driver's clock: csd ran 600 ms, render
     * 150 ms; the busiest queue gives the load. */
    write_text(root, "drm/card0/device/gpu_stats",
               "queue\ttimestamp\tjobs\truntime\n"
               "bin\t6000000000\t1300\t360000000\n"
               "render\t6000000000\t1299\t990000000\n"
               "tfu\t6000000000\t4\t1000000\n"
               "csd\t6000000000\t900\t1850000000\n"
               "cache_clean\t6000000000\t900\t19000000\n");
    ks_telemetry_sample(t, &s);
    ck_assert(s.freq[0].load_permille.valid);
    ck_assert_int_eq(s.freq[0].load_permille.value, 600);
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

START_TEST(rk3588_board)
{
    static const struct { const char *name; ks_telem_class cls; int32_t mc; }
    want[] = {
        { "soc-thermal", KS_TELEM_SOC, 48153 },
        { "bigcore0-thermal", KS_TELEM_CPU, 49076 },
        { "bigcore1-thermal", KS_TELEM_CPU, 48153 },
        { "littlecore-thermal", KS_TELEM_CPU, 47230 },
        { "center-thermal", KS_TELEM_SOC, 47230 },
        { "gpu-thermal", KS_TELEM_GPU, 46307 },
        { "npu-thermal", KS_TELEM_NPU, 46307 },
    };
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    int gpu, npu, dmc;
    char *text;

    fake_ns = NS_PER_S;
    t = open_at(board("rk3588"), false);
    in = ks_telemetry_get_info(t);
    ks_telemetry_sample(t, &s);

    ck_assert_uint_eq(in->n_zones, 7);
    for (int i = 0; i < 7; i++) {
        ck_assert_str_eq(in->zones[i].name, want[i].name);
        ck_assert_int_eq(in->zones[i].cls, want[i].cls);
        ck_assert_int_eq(s.zone_temp[i].temp_mc, want[i].mc);
    }
    /* BSP soc-thermal: IPA with two passive trips and 2100 mW. */
    ck_assert_str_eq(in->zones[0].policy, "power_allocator");
    ck_assert_uint_eq(in->zones[0].sustainable_power_mw, 2100);
    ck_assert_uint_eq(in->zones[0].n_trips, 3);
    ck_assert_int_eq(in->zones[0].trips[0].type, KS_TRIP_PASSIVE);
    ck_assert_int_eq(in->zones[0].trips[0].temp_mc, 75000);
    ck_assert_int_eq(in->zones[0].trips[0].hyst_mc, 2000);
    ck_assert_int_eq(in->zones[0].trips[1].temp_mc, 85000);
    ck_assert_int_eq(in->zones[0].trips[2].type, KS_TRIP_CRITICAL);
    ck_assert_uint_eq(in->zones[1].n_trips, 1);

    /* bigcore0 is hottest but has only a critical trip: the throttle
     * trip comes from soc-thermal, the first passive one (75 C). */
    ck_assert_int_eq(s.hottest_zone, 1);
    ck_assert_int_eq(s.hottest.temp_mc, 49076);
    ck_assert_int_eq(s.passive_zone, 0);
    ck_assert_int_eq(s.passive_trip.temp_mc, 75000);
    ck_assert_int_eq(s.critical_trip.temp_mc, 115000);

    ck_assert_uint_eq(in->n_cooling, 5);
    ck_assert_str_eq(in->cooling[3].name, "devfreq-fb000000.gpu");
    ck_assert_int_eq(s.cooling_state[4].value, 2);

    ck_assert_uint_eq(in->n_freq, 3);
    gpu = find_freq(in, "fb000000.gpu");
    npu = find_freq(in, "fdab0000.npu");
    dmc = find_freq(in, "dmc");
    ck_assert(gpu >= 0 && npu >= 0 && dmc >= 0);
    ck_assert_int_eq(in->freq[gpu].cls, KS_TELEM_GPU);
    ck_assert_int_eq(in->freq[npu].cls, KS_TELEM_NPU);
    ck_assert_int_eq(in->freq[dmc].cls, KS_TELEM_MEMORY);
    ck_assert_int_eq(s.freq[gpu].cur_hz.value, 300000000);
    ck_assert_int_eq(s.freq[gpu].min_hz.value, 300000000);
    ck_assert_int_eq(s.freq[gpu].max_hz.value, 1000000000);
    ck_assert_int_eq(s.freq[gpu].load_permille.value, 370);  /* 37@... */
    ck_assert_int_eq(s.freq[npu].load_permille.value, 0);
    ck_assert(s.freq[npu].load_permille.valid);
    ck_assert_int_eq(s.freq[dmc].cur_hz.value, 2112000000);
    ck_assert_int_eq(s.freq[dmc].load_permille.value, 210);

    ck_assert_uint_eq(in->n_power, 0);
    ck_assert_uint_eq(in->n_fans, 0);       /* pwm1 without a tachometer */
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_NONE);
    text = describe(t, false);
    ck_assert_ptr_nonnull(strstr(text, "no power sensor"));
    ck_assert_ptr_nonnull(strstr(text, "sustainable 2100 mW"));
    ck_assert_ptr_nonnull(strstr(text, "load 37.0 %"));
    free(text);
    ks_telemetry_destroy(t);
}
END_TEST

START_TEST(jetson_board)
{
    static const ks_telem_class cls[] = {
        KS_TELEM_CPU, KS_TELEM_GPU, KS_TELEM_NPU, KS_TELEM_NPU, KS_TELEM_NPU,
        KS_TELEM_SOC, KS_TELEM_SOC, KS_TELEM_SOC, KS_TELEM_PACKAGE,
    };
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    int vin, cpu, soc, gpu;

    fake_ns = NS_PER_S;
    t = open_at(board("jetson-orin"), false);
    in = ks_telemetry_get_info(t);
    ks_telemetry_sample(t, &s);

    ck_assert_uint_eq(in->n_zones, 9);
    for (int i = 0; i < 9; i++)
        ck_assert_msg(in->zones[i].cls == cls[i], "zone %s class %s",
                      in->zones[i].name, ks_telem_class_str(in->zones[i].cls));
    ck_assert_str_eq(in->zones[8].name, "tj-thermal");
    ck_assert_uint_eq(in->zones[8].n_trips, 5);

    /* INA3221: three V×I rails; in4..in7 (shunt µV) and curr4 (sum) are
     * not mistaken for channels. */
    ck_assert_uint_eq(in->n_power, 3);
    vin = find_power(in, "ina3221:VDD_IN");
    cpu = find_power(in, "ina3221:VDD_CPU_GPU_CV");
    soc = find_power(in, "ina3221:VDD_SOC");
    ck_assert(vin >= 0 && cpu >= 0 && soc >= 0);
    ck_assert_int_eq(in->power[vin].kind, KS_POWER_HWMON_VI);
    ck_assert_str_eq(in->power[vin].node, "hwmon1");
    ck_assert_int_eq(s.power_mw[vin].value, 6005);  /* 5072 mV × 1184 mA */
    ck_assert_int_eq(s.power_mw[cpu].value, 1988);
    ck_assert_int_eq(s.power_mw[soc].value, 1907);
    ck_assert(s.system_power_mw.valid && !s.system_power_mw.stale);
    ck_assert_int_eq(s.system_power_mw.value, 6005);
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_RAIL_INPUT);

    /* tj-thermal is hottest (no passive trip); cpu-thermal is the hottest
     * zone with one. */
    ck_assert_int_eq(s.hottest_zone, 8);
    ck_assert_int_eq(s.passive_zone, 0);
    ck_assert_int_eq(s.passive_trip.temp_mc, 99000);
    ck_assert_int_eq(s.critical_trip.temp_mc, 104500);

    gpu = find_freq(in, "17000000.gpu");
    ck_assert_int_ge(gpu, 0);
    ck_assert_int_eq(in->freq[gpu].cls, KS_TELEM_GPU);
    ck_assert_int_eq(s.freq[gpu].cur_hz.value, 306000000);
    ck_assert_int_eq(s.freq[gpu].max_hz.value, 624750000);
    ck_assert_int_eq(s.freq[gpu].load_permille.value, 123); /* 0.1 % units */
    ck_assert(!s.has_battery);
    ks_telemetry_destroy(t);
}
END_TEST

/* AGX Orin has no VDD_IN rail: the rails are summed. A disabled channel
 * is left out. */
START_TEST(jetson_rail_sum_and_disabled)
{
    char *root = tmp_tree("jetson-orin");
    ks_telemetry *t;
    ks_telem_sample s;

    write_text(root, "hwmon/hwmon1/in1_label", "VDD_GPU_SOC\n");
    fake_ns = NS_PER_S;
    t = open_at(root, false);
    ks_telemetry_sample(t, &s);
    ck_assert_uint_eq(s.n_power, 3);
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_RAIL_SUM);
    ck_assert_int_eq(s.system_power_mw.value, 6005 + 1988 + 1907);
    ks_telemetry_destroy(t);

    write_text(root, "hwmon/hwmon1/in3_enable", "0\n");
    t = open_at(root, false);
    ks_telemetry_sample(t, &s);
    ck_assert_uint_eq(s.n_power, 2);
    ck_assert_int_lt(find_power(ks_telemetry_get_info(t), "ina3221:VDD_SOC"),
                     0);
    ck_assert_int_eq(s.system_power_mw.value, 6005 + 1988);
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

START_TEST(x86_board)
{
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    int pkg, core, uncore, psys, mmio, npu, igpu;
    char *text;

    fake_ns = NS_PER_S;
    t = open_at(board("x86-laptop"), false);
    in = ks_telemetry_get_info(t);
    ks_telemetry_sample(t, &s);

    ck_assert_uint_eq(in->n_zones, 5);
    ck_assert_int_eq(in->zones[find_zone(in, "acpitz")].cls, KS_TELEM_BOARD);
    ck_assert_int_eq(in->zones[find_zone(in, "INT3400 Thermal")].cls,
                     KS_TELEM_BOARD);
    ck_assert_int_eq(in->zones[find_zone(in, "TCPU")].cls, KS_TELEM_CPU);
    ck_assert_int_eq(in->zones[find_zone(in, "iwlwifi_1")].cls,
                     KS_TELEM_OTHER);
    ck_assert_int_eq(in->zones[find_zone(in, "x86_pkg_temp")].cls,
                     KS_TELEM_PACKAGE);
    ck_assert_uint_eq(in->zones[find_zone(in, "INT3400 Thermal")].n_trips, 0);

    /* x86_pkg_temp is hottest, but its passive trips read 0 (unset):
     * the throttle trip is TCPU's 95 C. acpitz (board) does not count for
     * the critical trip. */
    ck_assert_int_eq(s.hottest_zone, find_zone(in, "x86_pkg_temp"));
    ck_assert_int_eq(s.hottest.temp_mc, 62000);
    ck_assert_int_eq(s.passive_zone, find_zone(in, "TCPU"));
    ck_assert_int_eq(s.passive_trip.temp_mc, 95000);
    ck_assert_int_eq(s.critical_trip.temp_mc, 110000);

    ck_assert_uint_eq(in->n_cooling, 4);
    ck_assert_int_eq(s.cooling_state[2].value, -1);  /* powerclamp idle */

    /* RAPL: the control-type directory is skipped, mmio kept apart. */
    ck_assert_uint_eq(in->n_power, 5);
    pkg = find_power_node(in, "intel-rapl:0");
    core = find_power_node(in, "intel-rapl:0:0");
    uncore = find_power_node(in, "intel-rapl:0:1");
    psys = find_power_node(in, "intel-rapl:1");
    mmio = find_power_node(in, "intel-rapl-mmio:0");
    ck_assert(pkg >= 0 && core >= 0 && uncore >= 0 && psys >= 0 && mmio >= 0);
    ck_assert_str_eq(in->power[pkg].name, "package-0");
    ck_assert_int_eq(in->power[pkg].rapl_role, KS_RAPL_PACKAGE);
    ck_assert_int_eq(in->power[core].rapl_role, KS_RAPL_CORE);
    ck_assert_int_eq(in->power[uncore].rapl_role, KS_RAPL_UNCORE);
    ck_assert_int_eq(in->power[psys].rapl_role, KS_RAPL_PSYS);
    ck_assert(in->power[mmio].rapl_mmio && !in->power[pkg].rapl_mmio);
    ck_assert(in->power[pkg].readable);
    ck_assert_uint_eq(in->power[pkg].max_energy_range_uj, 262143328850ull);
    ck_assert_uint_eq(in->power[pkg].n_constraints, 3);
    ck_assert_str_eq(in->power[pkg].constraints[0].name, "long_term");
    ck_assert_uint_eq(in->power[pkg].constraints[0].power_limit_uw, 28000000);
    ck_assert_uint_eq(in->power[pkg].constraints[0].time_window_us, 27983872);
    ck_assert_str_eq(in->power[pkg].constraints[2].name, "peak_power");
    ck_assert_uint_eq(in->power[pkg].constraints[2].time_window_us, 0);
    /* Energy needs two readings more than 1 ms apart. */
    ck_assert(!s.power_mw[pkg].valid);

    /* The ACPI battery; the mouse battery (scope Device) is skipped. */
    ck_assert_uint_eq(in->n_supplies, 2);
    ck_assert_str_eq(in->supplies[0].name, "AC");
    ck_assert_int_eq(in->supplies[0].type, KS_SUPPLY_MAINS);
    ck_assert_str_eq(in->supplies[1].name, "BAT0");
    ck_assert_int_eq(in->supplies[1].type, KS_SUPPLY_BATTERY);
    ck_assert(in->supplies[1].has_power_now);
    ck_assert_int_eq(s.supplies[1].status, KS_BATTERY_DISCHARGING);
    ck_assert_int_eq(s.supplies[1].capacity_pct.value, 76);
    ck_assert_int_eq(s.supplies[1].power_mw.value, 9840);
    ck_assert_int_eq(s.supplies[0].online.value, 0);
    ck_assert(s.has_battery);
    ck_assert_int_eq(s.battery_pct.value, 76);
    ck_assert(!s.charging && !s.external_power);
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_BATTERY);
    ck_assert_int_eq(s.system_power_mw.value, 9840);

    igpu = find_freq(in, "i915:card1");
    npu = find_freq(in, "npu:accel0");
    ck_assert_uint_eq(in->n_freq, 2);
    ck_assert(igpu >= 0 && npu >= 0);
    ck_assert_int_eq(in->freq[igpu].cls, KS_TELEM_GPU);
    ck_assert_int_eq(s.freq[igpu].cur_hz.value, 700000000);
    ck_assert_int_eq(s.freq[igpu].min_hz.value, 100000000);
    ck_assert_int_eq(s.freq[igpu].max_hz.value, 2250000000);
    ck_assert_int_eq(in->freq[npu].cls, KS_TELEM_NPU);
    ck_assert_int_eq(s.freq[npu].cur_hz.value, 1400000000);
    ck_assert(!s.freq[npu].load_permille.valid);  /* needs two samples */
    ck_assert_uint_eq(in->n_fans, 0);

    text = describe(t, false);
    ck_assert_ptr_null(strstr(text, "no battery"));
    ck_assert_ptr_null(strstr(text, "no power sensor"));
    ck_assert_ptr_nonnull(strstr(text, "long_term 28.0 W"));
    free(text);
    text = describe(t, true);
    ck_assert_ptr_nonnull(strstr(text, "\"system_power_source\":\"battery discharge\""));
    ck_assert_ptr_nonnull(strstr(text, "\"name\":\"INT3400 Thermal\""));
    ck_assert_int_eq(text[0], '{');
    ck_assert_int_eq(text[strlen(text) - 1], '}');
    free(text);
    ks_telemetry_destroy(t);
}
END_TEST

/* ---- energy, wrap-around, busy time ------------------------------------ */

START_TEST(rapl_power_and_wrap)
{
    char *root = tmp_tree("x86-laptop");
    const uint64_t range = 262143328850ull;
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    char buf[64];
    int pkg, mmio, npu;

    /* Charging: the battery no longer measures the system. */
    write_text(root, "power_supply/BAT0/status", "Charging\n");
    write_text(root, "power_supply/AC/online", "1\n");
    write_text(root, "powercap/intel-rapl:0/energy_uj", "262130000000\n");
    fake_ns = 100 * NS_PER_S;
    t = open_at(root, false);
    in = ks_telemetry_get_info(t);
    pkg = find_power_node(in, "intel-rapl:0");
    mmio = find_power_node(in, "intel-rapl-mmio:0");
    npu = find_freq(in, "npu:accel0");

    /* +6 J in 2 s: 3 W. The NPU was busy 0.5 s of those 2 s. */
    write_text(root, "powercap/intel-rapl:0/energy_uj", "262136000000\n");
    write_text(root, "powercap/intel-rapl-mmio:0/energy_uj",
               "41543641890\n");
    write_text(root, "accel/accel0/device/npu_busy_time_us", "5123500000\n");
    fake_ns += 2 * NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(s.power_mw[pkg].valid && !s.power_mw[pkg].stale);
    ck_assert_int_eq(s.power_mw[pkg].value, 3000);
    ck_assert_int_eq(s.power_mw[mmio].value, 10000);
    ck_assert(s.charging && s.external_power);
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_RAPL);
    ck_assert_int_eq(s.system_power_mw.value, 3000);  /* mmio not added */
    ck_assert_int_eq(s.freq[npu].load_permille.value, 250);

    /* The counter wraps within 1 s: (range - prev) + now
     * = 7328850 + 2671150 µJ = 10 J, 10 W. */
    write_text(root, "powercap/intel-rapl:0/energy_uj", "2671150\n");
    fake_ns += NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(range - 262136000000ull + 2671150ull == 10000000ull);
    ck_assert(s.power_mw[pkg].valid && !s.power_mw[pkg].stale);
    ck_assert_int_eq(s.power_mw[pkg].value, 10000);

    /* Less than 1 ms later: the previous average stays. */
    write_text(root, "powercap/intel-rapl:0/energy_uj", "2400000\n");
    fake_ns += 500000;
    ks_telemetry_sample(t, &s);
    ck_assert_int_eq(s.power_mw[pkg].value, 10000);
    ck_assert(!s.power_mw[pkg].stale);

    /* An unreadable counter keeps the last power, stale; then recovers,
     * averaging over the whole gap (2671150 → 6671150 in 2 s: 2 W). */
    write_text(root, "powercap/intel-rapl:0/energy_uj", "");
    fake_ns = 104 * NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(s.power_mw[pkg].valid && s.power_mw[pkg].stale);
    ck_assert_int_eq(s.power_mw[pkg].value, 10000);
    ck_assert(s.system_power_mw.stale);
    snprintf(buf, sizeof buf, "%d\n", 6671150);
    write_text(root, "powercap/intel-rapl:0/energy_uj", buf);
    fake_ns = 105 * NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(!s.power_mw[pkg].stale);
    ck_assert_int_eq(s.power_mw[pkg].value, 2000);
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

START_TEST(battery_current_voltage)
{
    char *root = tmp_tree("x86-laptop");
    ks_telemetry *t;
    ks_telem_sample s;

    /* A charge-unit battery: µA × µV, with the sign some drivers give. */
    remove_rel(root, "power_supply/BAT0/power_now");
    write_text(root, "power_supply/BAT0/current_now", "-600000\n");
    write_text(root, "power_supply/BAT0/voltage_now", "16400000\n");
    write_text(root, "power_supply/BAT0/capacity", "18\n");
    fake_ns = NS_PER_S;
    t = open_at(root, false);
    ks_telemetry_sample(t, &s);
    ck_assert(!ks_telemetry_get_info(t)->supplies[1].has_power_now);
    ck_assert(ks_telemetry_get_info(t)->supplies[1].has_power);
    ck_assert_int_eq(s.supplies[1].power_mw.value, 9840);
    ck_assert_int_eq(s.system_power_mw.value, 9840);
    ck_assert_int_eq(s.battery_pct.value, 18);

    write_text(root, "power_supply/BAT0/status", "Full\n");
    ks_telemetry_sample(t, &s);
    ck_assert(!s.charging && s.external_power);
    ck_assert_int_ne(s.system_power_src, KS_SYSPOWER_BATTERY);
    write_text(root, "power_supply/BAT0/status", "Not charging\n");
    ks_telemetry_sample(t, &s);
    ck_assert_int_eq(s.supplies[1].status, KS_BATTERY_NOT_CHARGING);
    ck_assert(s.external_power);
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

START_TEST(hwmon_power_and_energy)
{
    char *root = tmp_tree(NULL);
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    int ppt, ina, en, legacy;

    mkdirs(root, "hwmon/hwmon0");
    write_text(root, "hwmon/hwmon0/name", "amdgpu\n");
    write_text(root, "hwmon/hwmon0/power1_average", "15250000\n");
    write_text(root, "hwmon/hwmon0/power1_label", "PPT\n");
    mkdirs(root, "hwmon/hwmon1");
    write_text(root, "hwmon/hwmon1/name", "ina219\n");
    write_text(root, "hwmon/hwmon1/power1_input", "2500000\n");
    write_text(root, "hwmon/hwmon1/power1_average", "2400000\n");
    write_text(root, "hwmon/hwmon1/in1_input", "5000\n");
    write_text(root, "hwmon/hwmon1/curr1_input", "500\n");
    mkdirs(root, "hwmon/hwmon2");
    write_text(root, "hwmon/hwmon2/name", "meter\n");
    write_text(root, "hwmon/hwmon2/energy1_input", "1000000\n");
    /* An old driver: attributes in the parent device. */
    mkdirs(root, "hwmon/hwmon3/device");
    write_text(root, "hwmon/hwmon3/device/name", "legacy\n");
    write_text(root, "hwmon/hwmon3/device/power1_input", "1000000\n");

    fake_ns = NS_PER_S;
    t = open_at(root, false);
    in = ks_telemetry_get_info(t);
    ck_assert_uint_eq(in->n_power, 4);
    ppt = find_power(in, "amdgpu:PPT");
    ina = find_power(in, "ina219:power1");
    en = find_power(in, "meter:energy1");
    legacy = find_power(in, "legacy:power1");
    ck_assert(ppt >= 0 && ina >= 0 && en >= 0 && legacy >= 0);
    ck_assert_int_eq(in->power[ina].kind, KS_POWER_HWMON);
    ck_assert_int_eq(in->power[en].kind, KS_POWER_HWMON_ENERGY);

    write_text(root, "hwmon/hwmon2/energy1_input", "3000000\n");
    fake_ns += NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert_int_eq(s.power_mw[ppt].value, 15250);
    ck_assert_int_eq(s.power_mw[ina].value, 2500);   /* _input preferred */
    ck_assert_int_eq(s.power_mw[en].value, 2000);
    ck_assert_int_eq(s.power_mw[legacy].value, 1000);
    ck_assert_int_eq(s.system_power_src, KS_SYSPOWER_HWMON);
    ck_assert_int_eq(s.system_power_mw.value, 15250 + 2500 + 2000 + 1000);

    /* No wrap range: a counter that goes back is a reset, not a wrap. */
    write_text(root, "hwmon/hwmon2/energy1_input", "10\n");
    fake_ns += NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(s.power_mw[en].stale);
    ck_assert_int_eq(s.power_mw[en].value, 2000);
    write_text(root, "hwmon/hwmon2/energy1_input", "500010\n");
    fake_ns += NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(!s.power_mw[en].stale);
    ck_assert_int_eq(s.power_mw[en].value, 500);
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

/* ---- failures ---------------------------------------------------------- */

static void
check_stale(ks_telemetry *t, int32_t mc, uint64_t read_ns)
{
    ks_telem_sample s;

    fake_ns += NS_PER_S;
    ck_assert_int_eq(ks_telemetry_sample(t, &s), KS_OK);
    ck_assert(s.zone_temp[0].valid);
    ck_assert(s.zone_temp[0].stale);
    ck_assert_int_eq(s.zone_temp[0].temp_mc, mc);
    ck_assert_uint_eq(s.zone_temp[0].read_ns, read_ns);
    ck_assert(s.hottest.stale);
}

static void
stale_sequence(bool reopen)
{
    char *root = tmp_tree("rpi5");
    char path[2048];
    ks_telemetry *t;
    ks_telem_sample s;

    fake_ns = 10 * NS_PER_S;
    t = open_at(root, reopen);
    ks_telemetry_sample(t, &s);
    ck_assert_int_eq(s.zone_temp[0].temp_mc, 52650);

    /* The driver returns no data (an empty read). */
    write_text(root, "thermal/thermal_zone0/temp", "");
    check_stale(t, 52650, 10 * NS_PER_S);
    /* Unparsable text, then the thermal core's invalid marker. */
    write_text(root, "thermal/thermal_zone0/temp", "garbage\n");
    check_stale(t, 52650, 10 * NS_PER_S);
    write_text(root, "thermal/thermal_zone0/temp", "-274000\n");
    check_stale(t, 52650, 10 * NS_PER_S);
    /* The file becomes a directory, then a dangling symlink. */
    remove_rel(root, "thermal/thermal_zone0/temp");
    mkdirs(root, "thermal/thermal_zone0/temp");
    check_stale(t, 52650, 10 * NS_PER_S);
    remove_rel(root, "thermal/thermal_zone0/temp");
    snprintf(path, sizeof path, "%s/sys/class/thermal/thermal_zone0/temp",
             root);
    ck_assert_int_eq(symlink("/nonexistent/ks-telem-temp", path), 0);
    check_stale(t, 52650, 10 * NS_PER_S);
    /* The sensor comes back. */
    remove_rel(root, "thermal/thermal_zone0/temp");
    write_text(root, "thermal/thermal_zone0/temp", "61500\n");
    fake_ns += NS_PER_S;
    ks_telemetry_sample(t, &s);
    ck_assert(s.zone_temp[0].valid && !s.zone_temp[0].stale);
    ck_assert_int_eq(s.zone_temp[0].temp_mc, 61500);
    ck_assert_uint_eq(s.zone_temp[0].read_ns, fake_ns);
    /* Negative temperatures are real readings. */
    write_text(root, "thermal/thermal_zone0/temp", "-5000\n");
    ks_telemetry_sample(t, &s);
    ck_assert(!s.zone_temp[0].stale);
    ck_assert_int_eq(s.zone_temp[0].temp_mc, -5000);
    ks_telemetry_destroy(t);
    rm_tree(root);
}

START_TEST(zone_read_failure_keeps_last_value)
{
    stale_sequence(false);
}
END_TEST

START_TEST(zone_read_failure_reopen_mode)
{
    stale_sequence(true);
}
END_TEST

START_TEST(unreadable_at_open_is_absent)
{
    char *root = tmp_tree("x86-laptop");
    char path[2048];
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    int pkg;

    /* A zone whose temp is a dangling link: listed, never valid. */
    remove_rel(root, "thermal/thermal_zone3/temp");
    snprintf(path, sizeof path, "%s/sys/class/thermal/thermal_zone3/temp",
             root);
    ck_assert_int_eq(symlink("/nonexistent/ks-telem-temp", path), 0);
    /* A RAPL counter without read permission (only enforceable when the
     * tests do not run as root). */
    snprintf(path, sizeof path,
             "%s/sys/class/powercap/intel-rapl:0/energy_uj", root);
    ck_assert_int_eq(chmod(path, 0), 0);

    fake_ns = NS_PER_S;
    t = open_at(root, false);
    in = ks_telemetry_get_info(t);
    ks_telemetry_sample(t, &s);
    ck_assert_uint_eq(in->n_zones, 5);
    ck_assert_str_eq(in->zones[3].name, "iwlwifi_1");
    ck_assert(!s.zone_temp[3].valid);
    ck_assert(s.zone_temp[3].stale);
    ck_assert_int_eq(s.zone_temp[4].temp_mc, 62000);
    pkg = find_power_node(in, "intel-rapl:0");
    ck_assert_int_ge(pkg, 0);
    if (geteuid() != 0) {
        bool noted = false;

        ck_assert(!in->power[pkg].readable);
        ck_assert(!s.power_mw[pkg].valid);
        for (uint32_t i = 0; i < in->n_notes; i++)
            noted |= strstr(in->notes[i], "intel-rapl:0") != NULL;
        ck_assert(noted);
    }
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

/* Replaces the attribute <root>/sys/class/<rel> with a FIFO that nobody
 * writes: a plain open() of it would wait for a writer forever. */
static void
fifo_rel(const char *root, const char *rel)
{
    char path[2048];

    remove_rel(root, rel);
    snprintf(path, sizeof path, "%s/sys/class/%s", root, rel);
    ck_assert_msg(mkfifo(path, 0644) == 0, "mkfifo %s: %s", path, strerror(errno));
}

/* FIFOs where sysfs has attributes (read at discovery: a trip point, a
 * zone's type, a RAPL name; read at sampling: a zone's temp replaced after
 * open) count as absent instead of blocking. alarm() turns a hang into a
 * failure (SIGALRM) rather than a stuck run. */
START_TEST(fifo_attributes_are_absent)
{
    char *root = tmp_tree("x86-laptop");
    ks_telemetry *t;
    const ks_telem_info *in;
    ks_telem_sample s;
    int z0, z4, pkg;

    alarm(20);
    fifo_rel(root, "thermal/thermal_zone0/trip_point_0_temp");
    fifo_rel(root, "thermal/thermal_zone2/type");
    fifo_rel(root, "powercap/intel-rapl:0/name");

    fake_ns = NS_PER_S;
    t = open_at(root, true);   /* reopen mode: every sample opens again */
    in = ks_telemetry_get_info(t);
    ck_assert_uint_eq(in->n_zones, 5);
    z0 = find_zone(in, "acpitz");
    ck_assert_int_ge(z0, 0);
    ck_assert_uint_eq(in->zones[z0].n_trips, 0);        /* its only trip */
    ck_assert_str_eq(in->zones[2].name, "thermal_zone2");  /* type absent */
    pkg = find_power_node(in, "intel-rapl:0");
    ck_assert_int_ge(pkg, 0);
    ck_assert_str_eq(in->power[pkg].name, "intel-rapl:0");  /* name absent */
    z4 = find_zone(in, "x86_pkg_temp");
    ck_assert_int_ge(z4, 0);
    ck_assert_int_eq(ks_telemetry_sample(t, &s), KS_OK);
    ck_assert(s.zone_temp[z4].valid);

    fifo_rel(root, "thermal/thermal_zone4/temp");
    fake_ns += NS_PER_S;
    ck_assert_int_eq(ks_telemetry_sample(t, &s), KS_OK);
    ck_assert(s.zone_temp[z4].stale);
    ks_telemetry_destroy(t);
    rm_tree(root);
    alarm(0);
}
END_TEST

START_TEST(empty_root)
{
    char *root = tmp_tree(NULL);
    ks_telemetry *t;
    ks_telem_sample s;
    char *text;

    t = open_at(root, false);
    ck_assert_int_eq(ks_telemetry_sample(t, &s), KS_OK);
    ck_assert_uint_eq(s.n_zones + s.n_cooling + s.n_power + s.n_supplies +
                      s.n_freq + s.n_fans, 0);
    ck_assert_int_eq(s.hottest_zone, -1);
    ck_assert_int_eq(s.passive_zone, -1);
    ck_assert(!s.hottest.valid && !s.critical_trip.valid);
    ck_assert(!s.system_power_mw.valid && !s.has_battery);
    text = describe(t, false);
    ck_assert_ptr_nonnull(strstr(text, "no thermal zone"));
    ck_assert_ptr_nonnull(strstr(text, "no power sensor"));
    ck_assert_ptr_nonnull(strstr(text, "no battery"));
    ck_assert_ptr_nonnull(strstr(text, "no devfreq or GPU/NPU frequency readable"));
    free(text);
    text = describe(t, true);
    ck_assert_ptr_nonnull(strstr(text, "\"zones\":[]"));
    free(text);
    ks_telemetry_destroy(t);
    rm_tree(root);

    /* A root that does not exist at all is just as empty. */
    ck_assert_int_eq(ks_telemetry_open("/nonexistent/ks-telem", &t), KS_OK);
    ck_assert_uint_eq(ks_telemetry_get_info(t)->n_zones, 0);
    ks_telemetry_destroy(t);
}
END_TEST

START_TEST(root_from_env_and_override)
{
    ks_telemetry *t;
    char rk[1100];

    snprintf(rk, sizeof rk, "%.1024s/", board("rk3588"));  /* trailing / */
    setenv("KESTREL_SYSFS_ROOT", rk, 1);
    ck_assert_int_eq(ks_telemetry_open(NULL, &t), KS_OK);
    ck_assert_uint_eq(ks_telemetry_get_info(t)->n_zones, 7);
    ks_telemetry_destroy(t);
    ck_assert_int_eq(ks_telemetry_open(board("rpi5"), &t), KS_OK);
    ck_assert_uint_eq(ks_telemetry_get_info(t)->n_zones, 1);
    ks_telemetry_destroy(t);
    unsetenv("KESTREL_SYSFS_ROOT");
    ck_assert_int_eq(ks_telemetry_open_ex(NULL, NULL), KS_ERR_INVALID_ARG);
}
END_TEST

/* Real sysfs class entries are symlinks into /sys/devices. */
START_TEST(symlinked_class_entries)
{
    char *root = tmp_tree(NULL);
    char path[2048];
    ks_telemetry *t;
    ks_telem_sample s;

    mkdirs(root, "../devices/virtual/thermal/thermal_zone0");
    write_text(root, "../devices/virtual/thermal/thermal_zone0/type",
               "gpu-thermal\n");
    write_text(root, "../devices/virtual/thermal/thermal_zone0/temp",
               "70125\n");
    mkdirs(root, "thermal");
    snprintf(path, sizeof path, "%s/sys/class/thermal/thermal_zone0", root);
    ck_assert_int_eq(symlink("../../devices/virtual/thermal/thermal_zone0",
                             path), 0);
    t = open_at(root, false);
    ks_telemetry_sample(t, &s);
    ck_assert_uint_eq(s.n_zones, 1);
    ck_assert_int_eq(ks_telemetry_get_info(t)->zones[0].cls, KS_TELEM_GPU);
    ck_assert_int_eq(s.zone_temp[0].temp_mc, 70125);
    ks_telemetry_destroy(t);
    rm_tree(root);
}
END_TEST

START_TEST(real_sysfs)
{
    ks_telemetry *t = NULL;
    ks_telem_sample s;
    char *text;

    ck_assert_int_eq(ks_telemetry_open("/", &t), KS_OK);
    ck_assert_int_eq(ks_telemetry_sample(t, &s), KS_OK);
    ck_assert_str_eq(ks_telemetry_get_info(t)->root, "/");
    text = describe(t, false);
    ck_assert_ptr_nonnull(strstr(text, "Sensors (sysfs under /):\n"));
    printf("--- this machine's telemetry ---\n%s", text);
    free(text);
    text = describe(t, true);
    printf("%s\n", text);
    free(text);
    for (uint32_t i = 0; i < s.n_zones; i++)
        if (s.zone_temp[i].valid)
            ck_assert_int_gt(s.zone_temp[i].temp_mc, -274000);
    ks_telemetry_destroy(t);
}
END_TEST

START_TEST(classify_names)
{
    static const struct { const char *name; ks_telem_class cls; } cases[] = {
        { "cpu-thermal", KS_TELEM_CPU }, { "CPU-therm", KS_TELEM_CPU },
        { "bigcore2-thermal", KS_TELEM_CPU }, { "TCPU", KS_TELEM_CPU },
        { "B0D4", KS_TELEM_CPU }, { "littlecore-thermal", KS_TELEM_CPU },
        { "GPU-therm", KS_TELEM_GPU }, { "17000000.ga10b", KS_TELEM_GPU },
        { "npu-thermal", KS_TELEM_NPU }, { "cv2-thermal", KS_TELEM_NPU },
        { "soc1-thermal", KS_TELEM_SOC }, { "center-thermal", KS_TELEM_SOC },
        { "package-thermal", KS_TELEM_PACKAGE },
        { "x86_pkg_temp", KS_TELEM_PACKAGE }, { "tj-thermal", KS_TELEM_PACKAGE },
        { "Tj-therm", KS_TELEM_PACKAGE },
        { "acpitz", KS_TELEM_BOARD }, { "INT3400 Thermal", KS_TELEM_BOARD },
        { "pch_cannonlake", KS_TELEM_BOARD }, { "dmc", KS_TELEM_MEMORY },
        { "iwlwifi_1", KS_TELEM_OTHER }, { "", KS_TELEM_OTHER },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(ks_telem_classify(cases[i].name) == cases[i].cls,
                      "%s: got %s, want %s", cases[i].name,
                      ks_telem_class_str(ks_telem_classify(cases[i].name)),
                      ks_telem_class_str(cases[i].cls));
    ck_assert_int_eq(ks_telem_classify(NULL), KS_TELEM_OTHER);
}
END_TEST

static Suite *
telemetry_suite(void)
{
    Suite *s = suite_create("telemetry");
    TCase *tc;

    tc = tcase_create("boards");
    tcase_add_test(tc, rpi5_board);
    tcase_add_test(tc, rpi5_v3d_load);
    tcase_add_test(tc, rk3588_board);
    tcase_add_test(tc, jetson_board);
    tcase_add_test(tc, jetson_rail_sum_and_disabled);
    tcase_add_test(tc, x86_board);
    suite_add_tcase(s, tc);

    tc = tcase_create("energy");
    tcase_add_test(tc, rapl_power_and_wrap);
    tcase_add_test(tc, battery_current_voltage);
    tcase_add_test(tc, hwmon_power_and_energy);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_add_test(tc, zone_read_failure_keeps_last_value);
    tcase_add_test(tc, zone_read_failure_reopen_mode);
    tcase_add_test(tc, unreadable_at_open_is_absent);
    tcase_add_test(tc, fifo_attributes_are_absent);
    tcase_add_test(tc, empty_root);
    suite_add_tcase(s, tc);

    tc = tcase_create("discovery");
    tcase_add_test(tc, root_from_env_and_override);
    tcase_add_test(tc, symlinked_class_entries);
    tcase_add_test(tc, real_sysfs);
    tcase_add_test(tc, classify_names);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(telemetry_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
