/* `kestrel devices` (ks_devices_print) on the fake sysfs trees in
 * tests/data/sysfs/<board>/, on trees the tests build, and on the real
 * /sys: the execution targets, the sensor readings and the governor's
 * summary, as text and as JSON. Expected zones are read from the trees'
 * own files, so the trees can change without touching this file. Every
 * Vulkan instance the report makes runs the validation layer; a message
 * fails the test. */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kestrel/devices.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#endif

#ifndef KS_SYSFS_DATA
#error "KS_SYSFS_DATA must name tests/data/sysfs"
#endif
#ifndef KS_TEST_DATA
#error "KS_TEST_DATA must name tests/data"
#endif

/* ---- helpers ----------------------------------------------------------- */

/* The report for |flags| (QUICK added) under the current environment;
 * asserts KS_OK. The caller frees. */
static char *
report(unsigned flags)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ks_status st;

    ck_assert_ptr_nonnull(f);
    st = ks_devices_print(f, flags | KS_DEVICES_QUICK);
    ck_assert_msg(st == KS_OK, "ks_devices_print: %s", ks_last_error());
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_ptr_nonnull(buf);
#ifdef KS_HAVE_VULKAN
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
#endif
    return buf;
}

static void
use_root(const char *sysfs, const char *dev)
{
    setenv("KESTREL_SYSFS_ROOT", sysfs, 1);
    if (dev)
        setenv("KESTREL_DEV_ROOT", dev, 1);
    else
        unsetenv("KESTREL_DEV_ROOT");
}

static const char *
board(const char *name)
{
    static char buf[1024];

    snprintf(buf, sizeof buf, "%s/%s", KS_SYSFS_DATA, name);
    return buf;
}

/* The line of |text| that starts with |prefix|, copied into |out|; false
 * if there is none. */
static bool
line_with_prefix(const char *text, const char *prefix, char *out, size_t n)
{
    size_t plen = strlen(prefix);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, plen) == 0) {
            const char *end = strchr(p, '\n');
            size_t len = end ? (size_t)(end - p) : strlen(p);

            if (len >= n)
                len = n - 1;
            memcpy(out, p, len);
            out[len] = '\0';
            return true;
        }
    }
    return false;
}

static bool
read_file(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t r;

    if (!f)
        return false;
    r = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[r] = '\0';
    while (r > 0 && isspace((unsigned char)buf[r - 1]))
        buf[--r] = '\0';
    return true;
}

/* ---- a strict JSON checker --------------------------------------------- */

/* Recursive descent over RFC 8259; returns the position after the value
 * or NULL on a syntax error. Checks the syntax only. */
static const char *json_value(const char *p, int depth);

static const char *
ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *
json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!isxdigit((unsigned char)p[i]))
                        return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || !*p) {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static const char *
json_number(const char *p)
{
    const char *s;

    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (isdigit((unsigned char)*p))
        while (isdigit((unsigned char)*p))
            p++;
    else
        return NULL;
    if (*p == '.') {
        s = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        if (p == s)
            return NULL;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        s = p;
        while (isdigit((unsigned char)*p))
            p++;
        if (p == s)
            return NULL;
    }
    return p;
}

static const char *
json_value(const char *p, int depth)
{
    if (depth > 64)
        return NULL;
    p = ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';

        p = ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                if (!(p = json_string(ws(p))))
                    return NULL;
                p = ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            if (!(p = json_value(p, depth + 1)))
                return NULL;
            p = ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    if (*p == '"')
        return json_string(p);
    if (strncmp(p, "true", 4) == 0)
        return p + 4;
    if (strncmp(p, "false", 5) == 0)
        return p + 5;
    if (strncmp(p, "null", 4) == 0)
        return p + 4;
    return json_number(p);
}

static void
assert_json(const char *text)
{
    const char *end = json_value(text, 0);

    ck_assert_msg(end != NULL, "report is not valid JSON:\n%s", text);
    ck_assert_msg(*ws(end) == '\0', "text after the JSON object: %s", end);
}

/* Where "|key|": first occurs in |json|, or NULL. */
static const char *
json_key(const char *json, const char *key)
{
    char pat[128];

    snprintf(pat, sizeof pat, "\"%s\":", key);
    return strstr(json, pat);
}

/* ---- zones read from a tree -------------------------------------------- */

typedef struct zone {
    char name[64];
    long temp_mc;
} zone;

static int
zone_cmp(const void *a, const void *b)
{
    return strcmp(((const zone *)a)->name, ((const zone *)b)->name);
}

/* Every thermal zone of the tree at |root| with a readable temperature. */
static size_t
tree_zones(const char *root, zone *out, size_t max)
{
    char dir[1024], path[1400], buf[64];
    struct dirent *e;
    size_t n = 0;
    DIR *d;

    if (snprintf(dir, sizeof dir, "%s/sys/class/thermal", root) >= (int)sizeof dir)
        return 0;
    d = opendir(dir);
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL && n < max) {
        if (strncmp(e->d_name, "thermal_zone", 12) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s/type", dir, e->d_name);
        if (!read_file(path, out[n].name, sizeof out[n].name))
            continue;
        snprintf(path, sizeof path, "%s/%s/temp", dir, e->d_name);
        if (!read_file(path, buf, sizeof buf))
            continue;
        out[n].temp_mc = strtol(buf, NULL, 10);
        n++;
    }
    closedir(d);
    qsort(out, n, sizeof *out, zone_cmp);
    return n;
}

/* Text and JSON of |name|'s tree carry each of its zones with its
 * temperature; returns the number of zones, and both reports in *text and
 * *json for the caller to check further and free. */
static size_t
check_board(const char *name, char **text_out, char **json_out)
{
    zone zones[32];
    size_t n = tree_zones(board(name), zones, 32);
    char *text, *json, prefix[128], line[512], want[64];

    ck_assert_uint_gt(n, 0);
    use_root(board(name), NULL);
    text = report(0);
    json = report(KS_DEVICES_JSON);

    ck_assert_ptr_nonnull(strstr(text, "Execution targets:\n  cpu "));
    ck_assert_ptr_nonnull(strstr(text, "\nSensors (sysfs under "));
    ck_assert_ptr_nonnull(strstr(text, "\n  governor:  "));
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_lt(snprintf(prefix, sizeof prefix, "  zone       %s ", zones[i].name),
                         (int)sizeof prefix);
        ck_assert_msg(line_with_prefix(text, prefix, line, sizeof line),
                      "%s: no line for zone %s in\n%s", name, zones[i].name, text);
        snprintf(want, sizeof want, " %.1f °C", zones[i].temp_mc / 1000.0);
        ck_assert_msg(strstr(line, want), "%s: zone line '%s' lacks '%s'", name, line,
                      want);
    }

    assert_json(json);
    for (size_t i = 0; i < n; i++) {
        const char *z, *end;

        ck_assert_int_lt(snprintf(prefix, sizeof prefix, "{\"name\":\"%s\",\"node\":",
                                  zones[i].name), (int)sizeof prefix);
        z = strstr(json, prefix);
        ck_assert_msg(z != NULL, "%s: JSON lacks zone %s", name, zones[i].name);
        end = strchr(z, '}');
        snprintf(want, sizeof want, "\"temp_mc\":%ld,", zones[i].temp_mc);
        z = strstr(z, want);
        ck_assert_msg(z && z < end, "%s: JSON zone %s lacks %s", name, zones[i].name, want);
    }
    *text_out = text;
    *json_out = json;
    return n;
}

/* ---- boards ------------------------------------------------------------ */

START_TEST(rpi5_board)
{
    char *text, *json, line[512];

    ck_assert_uint_eq(check_board("rpi5", &text, &json), 1);
    /* cpu-thermal has only active and critical trips. */
    ck_assert(line_with_prefix(text, "  zone       cpu-thermal ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, ", critical 110.0 °C"));
    ck_assert_ptr_null(strstr(line, "passive"));
    ck_assert_ptr_nonnull(strstr(text, "  governor:  hottest relevant zone cpu-thermal at "
                                       "52.6 °C; no passive trip point: the governor "
                                       "stays off unless a limit is given\n"));
    ck_assert_ptr_nonnull(strstr(text, "  fan        pwmfan:fan1 "));
    ck_assert_ptr_nonnull(strstr(text, "  under-voltage alarm: no\n"));
    ck_assert_ptr_nonnull(strstr(text, "  no power sensors\n"));
    ck_assert_ptr_nonnull(strstr(text, "  no battery\n"));
    ck_assert_ptr_nonnull(strstr(json, "\"undervolt\":false,"));
    ck_assert_ptr_nonnull(strstr(json, "\"default_limit_mc\":null,\"headroom\":null,"
                                       "\"note\":\"no passive trip "
                                       "point: the governor stays off unless a limit is "
                                       "given\"}"));
    free(text);
    free(json);
}
END_TEST

START_TEST(rk3588_board)
{
    char *text, *json, line[512];
    const char *g;

    ck_assert_uint_eq(check_board("rk3588", &text, &json), 7);
    ck_assert(line_with_prefix(text, "  zone       soc-thermal ", line, sizeof line));
    /* Two passive trips (75, 85): the kernel starts at the lower. */
    ck_assert_ptr_nonnull(strstr(line, ", passive 75.0 °C, critical 115.0 °C"));
    ck_assert(line_with_prefix(text, "  frequency  fb000000.gpu ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "load "));
    ck_assert_ptr_nonnull(strstr(line, "devfreq"));
    ck_assert_ptr_nonnull(strstr(text, "  governor:  hottest relevant zone bigcore0-thermal "
                                       "at 49.1 °C; passive trip 75.0 °C (soc-thermal); "
                                       "default limit 70.0 °C"));
    free(text);

    g = json_key(json, "governor");
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(strstr(g, "\"passive_zone\":\"soc-thermal\",\"passive_trip_mc\":75000"));
    ck_assert_ptr_nonnull(strstr(g, "\"default_limit_mc\":70000"));
    /* (49.076 - 25) / (70 - 25) */
    ck_assert_ptr_nonnull(strstr(g, "\"headroom\":0.535,"));
    free(json);
}
END_TEST

START_TEST(jetson_board)
{
    char *text, *json, line[512];

    char path[1200], buf[64], want[128];
    long mv, ma, mw;
    const char *p;

    ck_assert_uint_eq(check_board("jetson-orin", &text, &json), 9);
    /* INA3221 rails have no power files: bus voltage x current. */
    snprintf(path, sizeof path, "%s/sys/class/hwmon/hwmon1/in1_label", board("jetson-orin"));
    ck_assert(read_file(path, buf, sizeof buf));
    ck_assert_str_eq(buf, "VDD_IN");
    snprintf(path, sizeof path, "%s/sys/class/hwmon/hwmon1/in1_input", board("jetson-orin"));
    ck_assert(read_file(path, buf, sizeof buf));
    mv = strtol(buf, NULL, 10);
    snprintf(path, sizeof path, "%s/sys/class/hwmon/hwmon1/curr1_input", board("jetson-orin"));
    ck_assert(read_file(path, buf, sizeof buf));
    ma = strtol(buf, NULL, 10);
    mw = mv * ma / 1000;

    ck_assert(line_with_prefix(text, "  power      ina3221:VDD_IN ", line, sizeof line));
    snprintf(want, sizeof want, " %.2f W  hwmon voltage x current (hwmon1)", mw / 1000.0);
    ck_assert_msg(strstr(line, want), "'%s' lacks '%s'", line, want);
    snprintf(want, sizeof want, "  system power %.2f W (input rail)\n", mw / 1000.0);
    ck_assert_ptr_nonnull(strstr(text, want));
    ck_assert_ptr_nonnull(strstr(text, "default limit 94.0 °C"));
    free(text);

    p = strstr(json, "{\"name\":\"ina3221:VDD_IN\",\"node\":\"hwmon1\","
                     "\"kind\":\"hwmon_vi\",\"energy_derived\":false");
    ck_assert_ptr_nonnull(p);
    snprintf(want, sizeof want, "\"power_mw\":%ld,", mw);
    p = strstr(p, want);
    ck_assert_ptr_nonnull(p);
    ck_assert(p < strchr(strstr(json, "ina3221:VDD_IN"), '}'));
    free(json);
}
END_TEST

START_TEST(x86_laptop_board)
{
    char *text, *json, line[512];

    ck_assert_uint_eq(check_board("x86-laptop", &text, &json), 5);
    /* x86_pkg_temp's passive trips are 0: unset, so not shown. */
    ck_assert(line_with_prefix(text, "  zone       x86_pkg_temp ", line, sizeof line));
    ck_assert_ptr_null(strstr(line, "passive"));
    ck_assert(line_with_prefix(text, "  zone       TCPU ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "passive 95.0 °C, critical 110.0 °C"));
    /* The counters of a fixed tree do not move: RAPL reads 0 W, but it
     * reads, which it can only after the second sample. */
    ck_assert(line_with_prefix(text, "  power      package-0 ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "0.00 W  RAPL package"));
    ck_assert_ptr_nonnull(strstr(line, "energy-derived"));
    ck_assert(line_with_prefix(text, "  battery    BAT0 ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "76 %, discharging, 9.84 W"));
    ck_assert_ptr_nonnull(strstr(text, "  supply     AC "));
    ck_assert_ptr_nonnull(strstr(text, "default limit 90.0 °C"));
    /* The NPU on accel0 has no execution path. */
    ck_assert(line_with_prefix(text, "  accel 0 ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "no execution path: "));
    free(text);

    ck_assert_ptr_nonnull(strstr(json, "\"kind\":\"rapl\",\"energy_derived\":true,"
                                       "\"rapl_domain\":\"package\""));
    ck_assert_ptr_nonnull(strstr(json, "\"batteries\":[{\"name\":\"BAT0\",\"capacity_pct\":76,"
                                       "\"status\":\"discharging\",\"power_mw\":9840}]"));
    ck_assert_ptr_nonnull(strstr(json, "{\"kind\":\"accel\",\"index\":0,\"name\":\"unknown\","
                                       "\"available\":false,\"note\":\"no execution path: "));
    free(json);
}
END_TEST

/* ---- targets ----------------------------------------------------------- */

START_TEST(targets_cpu_vulkan_accel)
{
    char dev_root[1024], *text, *json, want[512], line[512];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    snprintf(dev_root, sizeof dev_root, "%s", KS_TEST_DATA);
    use_root(KS_TEST_DATA "/accel-sysfs", dev_root);
    text = report(0);
    json = report(KS_DEVICES_JSON);
    assert_json(json);

    snprintf(want, sizeof want, "Execution targets:\n  cpu        %ld online core%s, always "
             "available\n", cores, cores == 1 ? "" : "s");
    ck_assert_msg(strstr(text, want), "no '%s' in\n%s", want, text);
    snprintf(want, sizeof want, "{\"kind\":\"cpu\",\"index\":0,\"name\":\"CPU\","
             "\"available\":true,");
    ck_assert_ptr_nonnull(strstr(json, want));
    snprintf(want, sizeof want, "\"n_cores\":%ld}", cores);
    ck_assert_ptr_nonnull(strstr(json, want));

    /* tests/data/accel-sysfs: intel_vpu and rocket with nodes, amdxdna
     * without. */
    ck_assert(line_with_prefix(text, "  accel 0    intel_vpu (", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "/dev/accel/accel0): no execution path: Intel NPU"));
    ck_assert(line_with_prefix(text, "  accel 1    amdxdna (no device node): no execution "
                               "path: ", line, sizeof line));
    ck_assert(line_with_prefix(text, "  accel 3    rocket (", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(json, "{\"kind\":\"accel\",\"index\":1,\"name\":\"amdxdna\","
                                       "\"available\":false,\"note\":\"no execution path: "));
    ck_assert_ptr_nonnull(strstr(json, "\"node\":null}"));

#ifdef KS_HAVE_VULKAN
    {
        ks_vk_device_info devs[16];
        uint32_t n = 16, chosen;

        if (ks_vk_devices_list(devs, &n) == KS_OK &&
            ks_vk_device_choose(devs, n, -1, &chosen) == KS_OK) {
            for (uint32_t i = 0; i < n; i++) {
                char prefix[300];

                snprintf(prefix, sizeof prefix, "  vulkan %-3u %s: ", devs[i].index,
                         devs[i].name);
                ck_assert(line_with_prefix(text, prefix, line, sizeof line) == devs[i].usable);
                if (!devs[i].usable)
                    continue;
                ck_assert(!!strstr(line, "<- Kestrel's choice") == (i == chosen));
                if (devs[i].type == KS_VK_TYPE_CPU)
                    ck_assert_ptr_nonnull(strstr(line, "software, on the same CPU cores"));
                snprintf(prefix, sizeof prefix, "{\"kind\":\"vulkan\",\"index\":%u,",
                         devs[i].index);
                ck_assert_ptr_nonnull(strstr(json, prefix));
            }
            ck_assert_ptr_nonnull(strstr(json, "\"note\":\"Kestrel's choice; "));
            ck_assert_ptr_nonnull(strstr(json, "\"chosen\":true}"));
        } else {
            ck_assert_ptr_nonnull(strstr(text, "  vulkan     none: "));
            ck_assert_ptr_null(strstr(json, "\"kind\":\"vulkan\""));
        }
        ck_assert_uint_eq(ks_vk_validation_total(), 0);
    }
#else
    ck_assert_ptr_nonnull(strstr(text, "  vulkan     none: this Kestrel was built without "
                                       "Vulkan support\n"));
#endif
    free(text);
    free(json);
}
END_TEST

START_TEST(unknown_flag_is_invalid)
{
    ck_assert_int_eq(ks_devices_print(stdout, 0x80), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_devices_print(NULL, 0), KS_ERR_INVALID_ARG);
}
END_TEST

/* ---- missing and unreadable sensors ------------------------------------ */

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
write_rel(const char *root, const char *rel, const char *text)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

START_TEST(no_sensors_is_not_an_error)
{
    char root[] = "/tmp/kestrel-test-devices-XXXXXX";
    char *text, *json;

    ck_assert_ptr_nonnull(mkdtemp(root));
    use_root(root, root);
    text = report(0);
    json = report(KS_DEVICES_JSON);
    assert_json(json);
    ck_assert_ptr_nonnull(strstr(text, "\n  no thermal zones readable\n"));
    ck_assert_ptr_nonnull(strstr(text, "\n  no power sensors\n"));
    ck_assert_ptr_nonnull(strstr(text, "\n  no battery\n"));
    ck_assert_ptr_nonnull(strstr(text, "\n  governor:  no CPU, GPU, NPU, SoC or package zone "
                                       "read; no passive trip point: the governor stays off "
                                       "unless a limit is given\n"));
    ck_assert_ptr_nonnull(strstr(json, "\"zones\":[],"));
    ck_assert_ptr_nonnull(strstr(json, "\"default_limit_mc\":null"));
    ck_assert_ptr_nonnull(strstr(json, "\"missing\":[\"no thermal zones readable\","));
    free(text);
    free(json);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
END_TEST

/* A zone whose temp does not parse is listed as unreadable; an hwmon
 * power file gives watts. */
START_TEST(unreadable_zone_and_hwmon_power)
{
    char root[] = "/tmp/kestrel-test-devices-XXXXXX";
    char *text, *json, line[512];

    ck_assert_ptr_nonnull(mkdtemp(root));
    write_rel(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    write_rel(root, "sys/class/thermal/thermal_zone0/temp", "not a number\n");
    write_rel(root, "sys/class/thermal/thermal_zone0/trip_point_0_type", "passive\n");
    write_rel(root, "sys/class/thermal/thermal_zone0/trip_point_0_temp", "80000\n");
    write_rel(root, "sys/class/hwmon/hwmon0/name", "ina219\n");
    write_rel(root, "sys/class/hwmon/hwmon0/power1_input", "2500000\n");
    use_root(root, root);
    text = report(0);
    json = report(KS_DEVICES_JSON);
    assert_json(json);

    ck_assert(line_with_prefix(text, "  zone       cpu-thermal ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "unreadable, passive 80.0 °C"));
    ck_assert_ptr_nonnull(strstr(text, "\n  no thermal zones readable (every zone's temp "
                                       "failed to read)\n"));
    ck_assert(line_with_prefix(text, "  power      ina219:power1 ", line, sizeof line));
    ck_assert_ptr_nonnull(strstr(line, "2.50 W  hwmon power (hwmon0)"));
    /* The trip is known even without a reading: the governor would use it. */
    ck_assert_ptr_nonnull(strstr(text, "passive trip 80.0 °C (cpu-thermal); default limit "
                                       "75.0 °C"));
    ck_assert_ptr_nonnull(strstr(json, "\"temp_mc\":null,"));
    ck_assert_ptr_nonnull(strstr(json, "\"kind\":\"hwmon_power\",\"energy_derived\":false"));
    free(text);
    free(json);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
END_TEST

/* ---- the real machine -------------------------------------------------- */

START_TEST(real_sysfs)
{
    char *text, *json;

    unsetenv("KESTREL_SYSFS_ROOT");
    unsetenv("KESTREL_DEV_ROOT");
    text = report(0);
    json = report(KS_DEVICES_JSON);
    ck_assert_ptr_nonnull(strstr(text, "\nExecution targets:\n  cpu "));
    ck_assert_ptr_nonnull(strstr(text, "\nSensors (sysfs under /):\n"));
    ck_assert_ptr_nonnull(strstr(text, "\n  governor:  "));
    assert_json(json);
    ck_assert_ptr_nonnull(json_key(json, "targets"));
    ck_assert_ptr_nonnull(json_key(json, "sensors"));
    ck_assert_ptr_nonnull(json_key(json, "governor"));
    free(text);
    free(json);

    /* The default, 100 ms between the samples. */
    {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        ck_assert_int_eq(ks_devices_print(f, 0), KS_OK);
        fclose(f);
        ck_assert_ptr_nonnull(strstr(buf, "\nSensors (sysfs under /):\n"));
        free(buf);
    }
}
END_TEST

static Suite *
devices_suite(void)
{
    Suite *s = suite_create("devices");
    TCase *tc;

    /* Each report lists Vulkan devices through an instance with the
     * validation layer, which takes a second or more on a busy machine:
     * more than check's default 4 s per test. */

    tc = tcase_create("boards");
    tcase_add_test(tc, rpi5_board);
    tcase_add_test(tc, rk3588_board);
    tcase_add_test(tc, jetson_board);
    tcase_add_test(tc, x86_laptop_board);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("targets");
    tcase_add_test(tc, targets_cpu_vulkan_accel);
    tcase_add_test(tc, unknown_flag_is_invalid);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("missing");
    tcase_add_test(tc, no_sensors_is_not_an_error);
    tcase_add_test(tc, unreadable_zone_and_hwmon_power);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("real");
    tcase_add_test(tc, real_sysfs);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(devices_suite());
    int failed;

    /* Every instance the report makes runs the Khronos validation layer. */
    setenv("KESTREL_VALIDATE", "1", 1);
    unsetenv("KESTREL_VK_MASK");
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
