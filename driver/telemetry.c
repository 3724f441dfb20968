/* Sysfs telemetry. Discovery (ks_telemetry_open) lists the class
 * directories under <root>/sys/class, reads the static facts once (names,
 * trip points, ranges, limits) into ks_telem_info and remembers, for every
 * value that changes, the path of its attribute file. Sampling preads those
 * files through descriptors kept open (a pread at offset 0 re-runs the
 * sysfs show function, so polling needs no reopen), converts units, turns
 * energy and busy-time counters into averages over the time since the
 * previous sample, and derives the summary the governor reads: hottest
 * zone, throttle trip, system power, battery.
 *
 * A read that fails keeps the previous value, marked stale; the
 * descriptor is closed and the path reopened on the next sample, so a
 * sensor that vanishes and comes back (module reload, hot-plug) recovers.
 * Class entries are symlinks into /sys/devices on a real system and plain
 * directories in the test trees: stat() follows links, so both work. */
#include "driver/telemetry.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/base.h"

#define TAG "telem"
/* The thermal core's "no valid temperature" marker (THERMAL_TEMP_INVALID). */
#define TEMP_INVALID_MC (-274000)
/* Below this interval an energy difference is mostly quantisation noise. */
#define MIN_ENERGY_INTERVAL_NS 1000000ull
#define V3D_MAX_QUEUES 8

/* One attribute file: its path and, while readable, an open descriptor. */
typedef struct attr {
    char *path;     /* NULL: the attribute does not exist */
    int   fd;
} attr;

/* Turns a monotonically increasing counter into a rate. */
typedef struct counter {
    uint64_t prev;
    uint64_t prev_ns;
    bool     have_prev;
} counter;

typedef struct power_priv {
    attr    a;              /* power µW, energy µJ, or bus voltage mV */
    attr    b;              /* VI only: current mA */
    counter energy;
    bool    is_input_rail;  /* label VDD_IN: the whole module's input */
} power_priv;

typedef struct supply_priv {
    attr capacity, status, power_now, current_now, voltage_now, online;
} supply_priv;

typedef enum load_fmt {
    LOAD_NONE = 0,
    LOAD_AT_FREQ,           /* Rockchip BSP devfreq "NN@FREQHz", percent */
    LOAD_PERMILLE,          /* Tegra device/load, 0.1 % units */
    LOAD_BUSY_US,           /* ivpu npu_busy_time_us, cumulative */
    LOAD_V3D_STATS,         /* v3d gpu_stats table */
} load_fmt;

typedef struct freq_priv {
    attr     cur, min, max, load;
    uint64_t hz_per_unit;   /* 1 for devfreq (Hz), 1000000 for MHz files */
    load_fmt fmt;
    counter  busy;
    uint64_t v3d_prev_ts;
    uint64_t v3d_prev_rt[V3D_MAX_QUEUES];
    bool     v3d_have_prev;
} freq_priv;

struct ks_telemetry {
    char           *root;       /* prefix for /sys/...; "" for the real / */
    ks_telem_params p;
    ks_telem_info   info;
    ks_telem_sample cur;
    attr            zone_temp[KS_TELEM_MAX_ZONES];
    attr            cooling_state[KS_TELEM_MAX_COOLING];
    power_priv      power[KS_TELEM_MAX_POWER];
    supply_priv     supplies[KS_TELEM_MAX_SUPPLIES];
    freq_priv       freq[KS_TELEM_MAX_FREQ];
    attr            fan[KS_TELEM_MAX_FANS];
    attr            undervolt;
    uint32_t        n_notes_dropped;
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t
now_ns(const ks_telemetry *t)
{
    return t->p.now_ns ? t->p.now_ns(t->p.clock_ctx) : ks_now_ns();
}

/* Copies with truncation; names longer than the field are cut. */
static void
copy_str(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);

    if (len >= n)
        len = n - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* snprintf for paths: on truncation the result is "" (a path that does
 * not exist), so an over-long path reads as a missing file. */
static bool KS_PRINTF(3, 4)
fmtpath(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (r < 0 || (size_t)r >= n) {
        buf[0] = '\0';
        return false;
    }
    return true;
}

static void KS_PRINTF(2, 3)
note(ks_telemetry *t, const char *fmt, ...)
{
    va_list ap;
    char buf[KS_TELEM_NOTE_MAX];

    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ks_log(KS_LOG_DEBUG, TAG, "%s", buf);
    if (t->info.n_notes < KS_TELEM_MAX_NOTES)
        copy_str(t->info.notes[t->info.n_notes++], KS_TELEM_NOTE_MAX, buf);
    else
        t->n_notes_dropped++;
}

/* Formats <root><rel> into |buf|; false if it does not fit. */
static bool KS_PRINTF(4, 5)
pathf(const ks_telemetry *t, char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    size_t len = strlen(t->root);
    int r;

    if (len >= n)
        return false;
    memcpy(buf, t->root, len);
    va_start(ap, fmt);
    r = vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
    return r >= 0 && (size_t)r < n - len;
}

static void
trim(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* Reads a whole small text file (at discovery); 0 or an errno. A FIFO or
 * device where an attribute should be is refused without blocking
 * (KS_ENOTREG, with a debug line) and counts as absent. */
static int
read_text(const char *path, char *buf, size_t n)
{
    const char *kind;
    int fd = ks_file_open_regular(path, &kind);
    ssize_t r;
    int err = 0;

    if (fd < 0) {
        err = errno;
        if (err == KS_ENOTREG)
            ks_log(KS_LOG_DEBUG, TAG, "%s is %s, not a regular file; ignored", path, kind);
        return err;
    }
    r = pread(fd, buf, n - 1, 0);
    if (r < 0)
        err = errno;
    else if (r == 0)
        err = ENODATA;
    close(fd);
    if (err)
        return err;
    buf[r] = '\0';
    trim(buf);
    return 0;
}

/* Parses one decimal integer with optional surrounding whitespace. */
static bool
parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s)
        return false;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return false;
    *out = v;
    return true;
}

static int
read_i64_path(const char *path, int64_t *out)
{
    char buf[64];
    int err = read_text(path, buf, sizeof buf);

    if (err)
        return err;
    return parse_i64(buf, out) ? 0 : EINVAL;
}

static bool
file_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void
attr_init(attr *a)
{
    a->path = NULL;
    a->fd = -1;
}

static void
attr_fini(attr *a)
{
    if (a->fd >= 0)
        close(a->fd);
    free(a->path);
    attr_init(a);
}

static ks_status
attr_set(attr *a, const char *path)
{
    size_t n = strlen(path) + 1;

    a->path = malloc(n);
    if (!a->path)
        return ks_error(KS_ERR_NOMEM, "telemetry: no memory for path %s",
                        path);
    memcpy(a->path, path, n);
    return KS_OK;
}

/* Sets the attribute to <root><rel> when that file exists. */
static ks_status KS_PRINTF(3, 4)
attr_probe(const ks_telemetry *t, attr *a, const char *fmt, ...)
{
    char path[PATH_MAX], rel[PATH_MAX];
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    if (r < 0 || (size_t)r >= sizeof rel)
        return KS_OK;
    if (!pathf(t, path, sizeof path, "%s", rel) || !file_exists(path))
        return KS_OK;
    return attr_set(a, path);
}

/* Reads the attribute's current text through its kept descriptor. Any
 * failure closes the descriptor so that the next call reopens the path. */
static int
attr_read(const ks_telemetry *t, attr *a, char *buf, size_t n)
{
    ssize_t r;
    int err = 0;

    if (!a->path)
        return ENOENT;
    if (a->fd < 0) {
        /* Never blocks: a FIFO in place of the attribute fails here. */
        a->fd = ks_file_open_regular(a->path, NULL);
        if (a->fd < 0)
            return errno;
    }
    r = pread(a->fd, buf, n - 1, 0);
    if (r < 0)
        err = errno;
    else if (r == 0)
        err = ENODATA;
    if (err || t->p.reopen_files) {
        close(a->fd);
        a->fd = -1;
    }
    if (err)
        return err;
    buf[r] = '\0';
    trim(buf);
    return 0;
}

static void
attr_close(attr *a)
{
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
}

/* Bad text counts as a failed read: the file is reopened next time, in
 * case it was replaced. */
static int
attr_read_i64(const ks_telemetry *t, attr *a, int64_t *out)
{
    char buf[64];
    int err = attr_read(t, a, buf, sizeof buf);

    if (err)
        return err;
    if (!parse_i64(buf, out)) {
        attr_close(a);
        return EINVAL;
    }
    return 0;
}

static void
val_set(ks_telem_value *v, int64_t x, uint64_t now)
{
    v->value = x;
    v->valid = true;
    v->stale = false;
    v->read_ns = now;
}

static void
val_fail(ks_telem_value *v)
{
    v->stale = true;
}

/* Reads an integer attribute scaled by mul/div into |v|. */
static void
sample_i64(const ks_telemetry *t, attr *a, int64_t mul, int64_t div,
           ks_telem_value *v, uint64_t now)
{
    int64_t x;

    if (!a->path)
        return;
    if (attr_read_i64(t, a, &x) == 0)
        val_set(v, x * mul / div, now);
    else
        val_fail(v);
}

/* Natural order, so thermal_zone10 sorts after thermal_zone9. */
static int
natcmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            unsigned long long x = strtoull(a, (char **)&a, 10);
            unsigned long long y = strtoull(b, (char **)&b, 10);
            if (x != y)
                return x < y ? -1 : 1;
            continue;
        }
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static int
natcmp_ptr(const void *a, const void *b)
{
    return natcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct namelist {
    char  **v;
    size_t  n;
} namelist;

static void
namelist_free(namelist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Entries of |dir| whose name starts with |prefix|, in natural order.
 * |want_dir|: only directories (following symlinks), else only regular
 * files. A missing directory gives an empty list. */
static ks_status
list_dir(const char *dir, const char *prefix, bool want_dir, namelist *out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t cap = 0, plen = strlen(prefix);
    ks_status st = KS_OK;

    out->v = NULL;
    out->n = 0;
    if (!d)
        return KS_OK;
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        char *copy;
        size_t n;

        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, plen) != 0)
            continue;
        if (fstatat(dirfd(d), e->d_name, &sb, 0) != 0)
            continue;
        if (want_dir ? !S_ISDIR(sb.st_mode) : !S_ISREG(sb.st_mode))
            continue;
        if (out->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nv = realloc(out->v, ncap * sizeof *nv);
            if (!nv) {
                st = ks_error(KS_ERR_NOMEM, "telemetry: no memory listing %s",
                              dir);
                break;
            }
            out->v = nv;
            cap = ncap;
        }
        n = strlen(e->d_name) + 1;
        copy = malloc(n);
        if (!copy) {
            st = ks_error(KS_ERR_NOMEM, "telemetry: no memory listing %s",
                          dir);
            break;
        }
        memcpy(copy, e->d_name, n);
        out->v[out->n++] = copy;
    }
    closedir(d);
    if (st != KS_OK) {
        namelist_free(out);
        return st;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, natcmp_ptr);
    return KS_OK;
}

/* ---- classification ---------------------------------------------------- */

/* True when |name| has a token (split on non-alphanumerics, lower-cased,
 * trailing digits dropped) equal to |tok|: "cv0-thermal" has "cv". */
static bool
has_token(const char *name, const char *tok)
{
    size_t tlen = strlen(tok);
    const char *p = name;

    while (*p) {
        const char *s;
        size_t n;

        while (*p && !isalnum((unsigned char)*p))
            p++;
        s = p;
        while (isalnum((unsigned char)*p))
            p++;
        n = (size_t)(p - s);
        while (n > 0 && isdigit((unsigned char)s[n - 1]))
            n--;
        if (n == tlen && n > 0 && strncasecmp(s, tok, n) == 0)
            return true;
    }
    return false;
}

static bool
has_sub(const char *name, const char *sub)
{
    size_t n = strlen(sub);

    for (const char *p = name; *p; p++)
        if (strncasecmp(p, sub, n) == 0)
            return true;
    return false;
}

/* Zone and device names seen on the targets (reference table, section 1):
 * RPi 5 cpu-thermal; RK3588 package/bigcore/littlecore/center/gpu/npu and
 * BSP soc-thermal; Jetson cpu/gpu/cv0-2/soc0-2/tj (older CPU-therm); x86
 * x86_pkg_temp, acpitz, TCPU/B0D4, INT3400, pch_*, iwlwifi_*. */
ks_telem_class
ks_telem_classify(const char *name)
{
    if (!name)
        return KS_TELEM_OTHER;
    if (has_sub(name, "pkg") || has_sub(name, "package") ||
        has_token(name, "tj"))
        return KS_TELEM_PACKAGE;
    if (has_sub(name, "gpu") || has_sub(name, "ga10b") ||
        has_sub(name, "gv11b") || has_sub(name, "mali") ||
        has_sub(name, "i915") || has_token(name, "xe") ||
        has_sub(name, "v3d"))
        return KS_TELEM_GPU;
    if (has_sub(name, "npu") || has_token(name, "cv") ||
        has_token(name, "dla") || has_token(name, "vpu"))
        return KS_TELEM_NPU;
    if (has_sub(name, "cpu") || has_sub(name, "core") ||
        has_token(name, "b0d") || has_token(name, "cluster"))
        return KS_TELEM_CPU;
    if (has_token(name, "dmc") || has_sub(name, "ddr") ||
        has_token(name, "mem") || has_token(name, "dram"))
        return KS_TELEM_MEMORY;
    if (has_sub(name, "soc") || has_token(name, "center"))
        return KS_TELEM_SOC;
    if (has_sub(name, "acpitz") || has_sub(name, "int3400") ||
        has_token(name, "pch") || has_sub(name, "skin") ||
        has_sub(name, "board") || has_sub(name, "ambient"))
        return KS_TELEM_BOARD;
    return KS_TELEM_OTHER;
}

const char *
ks_telem_class_str(ks_telem_class c)
{
    switch (c) {
    case KS_TELEM_OTHER: return "other";
    case KS_TELEM_CPU: return "cpu";
    case KS_TELEM_GPU: return "gpu";
    case KS_TELEM_NPU: return "npu";
    case KS_TELEM_SOC: return "soc";
    case KS_TELEM_PACKAGE: return "package";
    case KS_TELEM_BOARD: return "board";
    case KS_TELEM_MEMORY: return "memory";
    }
    return "other";
}

const char *
ks_telem_trip_type_str(ks_telem_trip_type t)
{
    switch (t) {
    case KS_TRIP_UNKNOWN: return "unknown";
    case KS_TRIP_ACTIVE: return "active";
    case KS_TRIP_PASSIVE: return "passive";
    case KS_TRIP_HOT: return "hot";
    case KS_TRIP_CRITICAL: return "critical";
    }
    return "unknown";
}

static ks_telem_trip_type
parse_trip_type(const char *s)
{
    if (strcmp(s, "active") == 0)
        return KS_TRIP_ACTIVE;
    if (strcmp(s, "passive") == 0)
        return KS_TRIP_PASSIVE;
    if (strcmp(s, "hot") == 0)
        return KS_TRIP_HOT;
    if (strcmp(s, "critical") == 0)
        return KS_TRIP_CRITICAL;
    return KS_TRIP_UNKNOWN;
}

static bool
is_relevant(ks_telem_class c)
{
    return c == KS_TELEM_CPU || c == KS_TELEM_GPU || c == KS_TELEM_NPU ||
           c == KS_TELEM_SOC || c == KS_TELEM_PACKAGE;
}

/* ---- discovery --------------------------------------------------------- */

static ks_status
discover_thermal(ks_telemetry *t)
{
    char dir[PATH_MAX], path[PATH_MAX], buf[KS_TELEM_NAME_MAX];
    namelist zones = { 0 }, cdevs = { 0 };
    ks_status st;

    if (!pathf(t, dir, sizeof dir, "/sys/class/thermal"))
        return KS_OK;
    if ((st = list_dir(dir, "thermal_zone", true, &zones)) != KS_OK)
        goto fail;
    for (size_t i = 0; i < zones.n; i++) {
        const char *node = zones.v[i];
        ks_telem_zone_info *z;
        int64_t x;

        if (t->info.n_zones == KS_TELEM_MAX_ZONES) {
            note(t, "thermal: %zu zones beyond the first %d ignored",
                 zones.n - i, KS_TELEM_MAX_ZONES);
            break;
        }
        z = &t->info.zones[t->info.n_zones];
        memset(z, 0, sizeof *z);
        copy_str(z->node, sizeof z->node, node);
        pathf(t, path, sizeof path, "/sys/class/thermal/%s/type", node);
        if (read_text(path, buf, sizeof buf) == 0)
            copy_str(z->name, sizeof z->name, buf);
        else
            copy_str(z->name, sizeof z->name, node);
        z->cls = ks_telem_classify(z->name);
        pathf(t, path, sizeof path, "/sys/class/thermal/%s/policy", node);
        if (read_text(path, buf, sizeof buf) == 0)
            copy_str(z->policy, sizeof z->policy, buf);
        pathf(t, path, sizeof path,
              "/sys/class/thermal/%s/sustainable_power", node);
        if (read_i64_path(path, &x) == 0 && x > 0 && x <= UINT32_MAX)
            z->sustainable_power_mw = (uint32_t)x;

        for (int k = 0;; k++) {
            ks_telem_trip *tp;

            pathf(t, path, sizeof path,
                  "/sys/class/thermal/%s/trip_point_%d_type", node, k);
            if (read_text(path, buf, sizeof buf) != 0)
                break;
            if (z->n_trips == KS_TELEM_MAX_TRIPS) {
                note(t, "thermal: %s (%s): trips beyond %d ignored", node,
                     z->name, KS_TELEM_MAX_TRIPS);
                break;
            }
            tp = &z->trips[z->n_trips];
            tp->type = parse_trip_type(buf);
            pathf(t, path, sizeof path,
                  "/sys/class/thermal/%s/trip_point_%d_temp", node, k);
            if (read_i64_path(path, &x) != 0 || x < INT32_MIN ||
                x > INT32_MAX)
                continue;   /* a trip without a temperature is no limit */
            tp->temp_mc = (int32_t)x;
            pathf(t, path, sizeof path,
                  "/sys/class/thermal/%s/trip_point_%d_hyst", node, k);
            if (read_i64_path(path, &x) == 0 && x >= 0 && x <= INT32_MAX)
                tp->hyst_mc = (int32_t)x;
            z->n_trips++;
        }

        attr_init(&t->zone_temp[t->info.n_zones]);
        st = attr_probe(t, &t->zone_temp[t->info.n_zones],
                        "/sys/class/thermal/%s/temp", node);
        if (st != KS_OK)
            goto fail;
        if (!t->zone_temp[t->info.n_zones].path)
            note(t, "thermal: %s (%s) has no readable temp file", node,
                 z->name);
        ks_log(KS_LOG_DEBUG, TAG, "zone %s '%s' class=%s trips=%u policy=%s",
               node, z->name, ks_telem_class_str(z->cls), z->n_trips,
               z->policy[0] ? z->policy : "?");
        t->info.n_zones++;
    }

    if ((st = list_dir(dir, "cooling_device", true, &cdevs)) != KS_OK)
        goto fail;
    for (size_t i = 0; i < cdevs.n; i++) {
        const char *node = cdevs.v[i];
        ks_telem_cooling_info *c;
        int64_t x;

        if (t->info.n_cooling == KS_TELEM_MAX_COOLING) {
            note(t, "thermal: %zu cooling devices beyond the first %d "
                 "ignored", cdevs.n - i, KS_TELEM_MAX_COOLING);
            break;
        }
        c = &t->info.cooling[t->info.n_cooling];
        memset(c, 0, sizeof *c);
        copy_str(c->node, sizeof c->node, node);
        pathf(t, path, sizeof path, "/sys/class/thermal/%s/type", node);
        copy_str(c->name, sizeof c->name,
                 read_text(path, buf, sizeof buf) == 0 ? buf : node);
        pathf(t, path, sizeof path, "/sys/class/thermal/%s/max_state", node);
        if (read_i64_path(path, &x) == 0 && x >= 0 && x <= INT32_MAX)
            c->max_state = (int32_t)x;
        attr_init(&t->cooling_state[t->info.n_cooling]);
        st = attr_probe(t, &t->cooling_state[t->info.n_cooling],
                        "/sys/class/thermal/%s/cur_state", node);
        if (st != KS_OK)
            goto fail;
        ks_log(KS_LOG_DEBUG, TAG, "cooling %s '%s' max_state=%d", node,
               c->name, c->max_state);
        t->info.n_cooling++;
    }
    st = KS_OK;
fail:
    namelist_free(&cdevs);
    namelist_free(&zones);
    return st;
}

/* "power3_input" with prefix "power", suffix "_input" gives 3. */
static bool
parse_chan(const char *name, const char *prefix, const char *suffix,
           unsigned *idx)
{
    size_t plen = strlen(prefix);
    const char *p = name + plen;
    char *end;
    unsigned long v;

    if (strncmp(name, prefix, plen) != 0 || !isdigit((unsigned char)*p))
        return false;
    v = strtoul(p, &end, 10);
    if (strcmp(end, suffix) != 0 || v > 1000)
        return false;
    *idx = (unsigned)v;
    return true;
}

static ks_telem_power_info *
new_power(ks_telemetry *t, const char *what)
{
    ks_telem_power_info *pi;
    power_priv *pp;

    if (t->info.n_power == KS_TELEM_MAX_POWER) {
        note(t, "power: %s ignored, more than %d power sources", what,
             KS_TELEM_MAX_POWER);
        return NULL;
    }
    pi = &t->info.power[t->info.n_power];
    pp = &t->power[t->info.n_power];
    memset(pi, 0, sizeof *pi);
    memset(pp, 0, sizeof *pp);
    attr_init(&pp->a);
    attr_init(&pp->b);
    pi->readable = true;
    return pi;
}

/* Channel label <adir>/<kind><idx>_label, or "<kind><idx>". */
static void
chan_label(const char *adir, const char *kind, unsigned idx, char *out,
           size_t n)
{
    char path[PATH_MAX], buf[KS_TELEM_NAME_MAX];

    fmtpath(path, sizeof path, "%s/%s%u_label", adir, kind, idx);
    if (read_text(path, buf, sizeof buf) == 0 && buf[0])
        copy_str(out, n, buf);
    else
        snprintf(out, n, "%s%u", kind, idx);
}

static ks_status
hwmon_channels(ks_telemetry *t, const char *node, const char *chip,
               const char *adir)
{
    namelist files = { 0 };
    char path[PATH_MAX], label[KS_TELEM_NAME_MAX];
    ks_status st;
    unsigned idx;

    if ((st = list_dir(adir, "", false, &files)) != KS_OK)
        return st;
    for (size_t i = 0; i < files.n && st == KS_OK; i++) {
        const char *f = files.v[i];
        ks_telem_power_info *pi = NULL;
        power_priv *pp;
        bool avg = parse_chan(f, "power", "_average", &idx);

        if (parse_chan(f, "power", "_input", &idx) || avg) {
            /* Prefer the instantaneous file when both exist. */
            fmtpath(path, sizeof path, "%s/power%u_input", adir, idx);
            if (avg && file_exists(path))
                continue;
            chan_label(adir, "power", idx, label, sizeof label);
            if (!(pi = new_power(t, f)))
                continue;
            pi->kind = KS_POWER_HWMON;
        } else if (parse_chan(f, "energy", "_input", &idx)) {
            chan_label(adir, "energy", idx, label, sizeof label);
            if (!(pi = new_power(t, f)))
                continue;
            pi->kind = KS_POWER_HWMON_ENERGY;
        } else if (parse_chan(f, "in", "_input", &idx)) {
            /* A shunt monitor without power files (INA3221): bus voltage
             * and current of the same channel give the rail's power. */
            int64_t en;

            /* INA3221: in4..in6 are shunt voltages (µV) and curr4 is the
             * sum of currents (Documentation/hwmon/ina3221.rst), so only
             * channels 1..3 pair up. */
            if (strcmp(chip, "ina3221") == 0 && (idx < 1 || idx > 3))
                continue;
            fmtpath(path, sizeof path, "%s/curr%u_input", adir, idx);
            if (!file_exists(path))
                continue;
            fmtpath(path, sizeof path, "%s/power%u_input", adir, idx);
            if (file_exists(path))
                continue;
            /* A disabled channel reads ENODATA forever: leave it out. */
            fmtpath(path, sizeof path, "%s/in%u_enable", adir, idx);
            if (read_i64_path(path, &en) == 0 && en == 0) {
                ks_log(KS_LOG_DEBUG, TAG, "hwmon %s in%u disabled", node, idx);
                continue;
            }
            chan_label(adir, "in", idx, label, sizeof label);
            if (!(pi = new_power(t, f)))
                continue;
            pi->kind = KS_POWER_HWMON_VI;
        } else if (parse_chan(f, "fan", "_input", &idx)) {
            if (t->info.n_fans == KS_TELEM_MAX_FANS) {
                note(t, "hwmon: %s %s ignored, more than %d fans", node, f,
                     KS_TELEM_MAX_FANS);
                continue;
            }
            snprintf(t->info.fans[t->info.n_fans].name, KS_TELEM_NAME_MAX,
                     "%.20s:fan%u", chip, idx);
            attr_init(&t->fan[t->info.n_fans]);
            fmtpath(path, sizeof path, "%s/%s", adir, f);
            if ((st = attr_set(&t->fan[t->info.n_fans], path)) != KS_OK)
                break;
            ks_log(KS_LOG_DEBUG, TAG, "fan %s", t->info.fans[t->info.n_fans].name);
            t->info.n_fans++;
            continue;
        } else if (strcmp(f, "in0_lcrit_alarm") == 0 &&
                   strcmp(chip, "rpi_volt") == 0) {
            fmtpath(path, sizeof path, "%s/%s", adir, f);
            if ((st = attr_set(&t->undervolt, path)) != KS_OK)
                break;
            t->info.has_undervolt = true;
            note(t, "hwmon: Raspberry Pi firmware throttles on its own near "
                 "80-85 C; that is not visible in sysfs (vcgencmd "
                 "get_throttled)");
            continue;
        } else {
            continue;
        }

        pp = &t->power[t->info.n_power];
        snprintf(pi->name, sizeof pi->name, "%.20s:%.26s", chip, label);
        copy_str(pi->node, sizeof pi->node, node);
        fmtpath(path, sizeof path, "%s/%s", adir, f);
        if ((st = attr_set(&pp->a, path)) != KS_OK)
            break;
        if (pi->kind == KS_POWER_HWMON_VI) {
            fmtpath(path, sizeof path, "%s/curr%u_input", adir, idx);
            if ((st = attr_set(&pp->b, path)) != KS_OK)
                break;
            pp->is_input_rail = strcasecmp(label, "VDD_IN") == 0;
        }
        ks_log(KS_LOG_DEBUG, TAG, "power %s (%s %s)%s", pi->name, node, f,
               pp->is_input_rail ? " input rail" : "");
        t->info.n_power++;
    }
    if (st != KS_OK && t->info.n_power < KS_TELEM_MAX_POWER) {
        attr_fini(&t->power[t->info.n_power].a);
        attr_fini(&t->power[t->info.n_power].b);
    }
    namelist_free(&files);
    return st;
}

static ks_status
discover_hwmon(ks_telemetry *t)
{
    char dir[PATH_MAX], adir[PATH_MAX], path[PATH_MAX];
    char chip[KS_TELEM_NAME_MAX];
    namelist mons = { 0 };
    ks_status st;

    if (!pathf(t, dir, sizeof dir, "/sys/class/hwmon"))
        return KS_OK;
    if ((st = list_dir(dir, "hwmon", true, &mons)) != KS_OK)
        return st;
    for (size_t i = 0; i < mons.n && st == KS_OK; i++) {
        const char *node = mons.v[i];

        /* Old drivers keep their attributes in the parent device. */
        fmtpath(adir, sizeof adir, "%s/%s", dir, node);
        fmtpath(path, sizeof path, "%s/name", adir);
        if (!file_exists(path)) {
            fmtpath(adir, sizeof adir, "%s/%s/device", dir, node);
            fmtpath(path, sizeof path, "%s/name", adir);
        }
        if (read_text(path, chip, sizeof chip) != 0)
            copy_str(chip, sizeof chip, node);
        ks_log(KS_LOG_DEBUG, TAG, "hwmon %s '%s'", node, chip);
        st = hwmon_channels(t, node, chip, adir);
    }
    namelist_free(&mons);
    return st;
}

static ks_telem_rapl_role
rapl_role(const char *name)
{
    if (strncmp(name, "package", 7) == 0)
        return KS_RAPL_PACKAGE;
    if (strcmp(name, "core") == 0)
        return KS_RAPL_CORE;
    if (strcmp(name, "uncore") == 0)
        return KS_RAPL_UNCORE;
    if (strcmp(name, "dram") == 0)
        return KS_RAPL_DRAM;
    if (strcmp(name, "psys") == 0)
        return KS_RAPL_PSYS;
    return KS_RAPL_OTHER;
}

static ks_status
discover_powercap(ks_telemetry *t)
{
    char dir[PATH_MAX], path[PATH_MAX], buf[KS_TELEM_NAME_MAX];
    namelist zones = { 0 };
    ks_status st;

    if (!pathf(t, dir, sizeof dir, "/sys/class/powercap"))
        return KS_OK;
    if ((st = list_dir(dir, "", true, &zones)) != KS_OK)
        return st;
    for (size_t i = 0; i < zones.n; i++) {
        const char *node = zones.v[i];
        ks_telem_power_info *pi;
        power_priv *pp;
        const char *kind;
        int64_t x;
        int fd;

        /* Control-type directories ("intel-rapl") carry no energy_uj. */
        fmtpath(path, sizeof path, "%s/%s/energy_uj", dir, node);
        if (!file_exists(path))
            continue;
        if (!(pi = new_power(t, node)))
            break;
        pp = &t->power[t->info.n_power];
        pi->kind = KS_POWER_RAPL;
        copy_str(pi->node, sizeof pi->node, node);
        fmtpath(path, sizeof path, "%s/%s/name", dir, node);
        copy_str(pi->name, sizeof pi->name,
                 read_text(path, buf, sizeof buf) == 0 ? buf : node);
        pi->rapl_role = rapl_role(pi->name);
        pi->rapl_mmio = strncmp(node, "intel-rapl-mmio", 15) == 0;
        fmtpath(path, sizeof path, "%s/%s/max_energy_range_uj", dir, node);
        if (read_i64_path(path, &x) == 0 && x > 0)
            pi->max_energy_range_uj = (uint64_t)x;
        for (int c = 0; c < KS_TELEM_MAX_RAPL_CONSTRAINTS; c++) {
            ks_telem_rapl_constraint *rc = &pi->constraints[pi->n_constraints];

            fmtpath(path, sizeof path, "%s/%s/constraint_%d_name", dir, node,
                     c);
            if (read_text(path, buf, sizeof buf) != 0)
                break;
            copy_str(rc->name, sizeof rc->name, buf);
            fmtpath(path, sizeof path,
                     "%s/%s/constraint_%d_power_limit_uw", dir, node, c);
            if (read_i64_path(path, &x) == 0 && x >= 0)
                rc->power_limit_uw = (uint64_t)x;
            fmtpath(path, sizeof path,
                     "%s/%s/constraint_%d_time_window_us", dir, node, c);
            if (read_i64_path(path, &x) == 0 && x >= 0)
                rc->time_window_us = (uint64_t)x;
            pi->n_constraints++;
        }
        fmtpath(path, sizeof path, "%s/%s/energy_uj", dir, node);
        /* energy_uj is mode 0400 since Linux 5.10 (PLATYPUS). */
        fd = ks_file_open_regular(path, &kind);
        if (fd < 0 && errno == KS_ENOTREG) {
            pi->readable = false;
            note(t, "powercap: %s (%s) energy_uj is %s, not a regular file; "
                 "ignored", node, pi->name, kind);
        } else if (fd < 0) {
            pi->readable = false;
            note(t, "powercap: %s (%s) energy_uj not readable (%s); it is "
                 "root-only since Linux 5.10: use a udev rule", node,
                 pi->name, strerror(errno));
        } else {
            close(fd);
        }
        if ((st = attr_set(&pp->a, path)) != KS_OK)
            break;
        ks_log(KS_LOG_DEBUG, TAG, "rapl %s '%s' range=%" PRIu64
               "uJ constraints=%u%s%s", node, pi->name,
               pi->max_energy_range_uj, pi->n_constraints,
               pi->rapl_mmio ? " mmio" : "", pi->readable ? "" : " unreadable");
        t->info.n_power++;
    }
    namelist_free(&zones);
    return st;
}

static ks_status
discover_supplies(ks_telemetry *t)
{
    char dir[PATH_MAX], path[PATH_MAX], buf[KS_TELEM_NAME_MAX];
    namelist sups = { 0 };
    ks_status st;

    if (!pathf(t, dir, sizeof dir, "/sys/class/power_supply"))
        return KS_OK;
    if ((st = list_dir(dir, "", true, &sups)) != KS_OK)
        return st;
    for (size_t i = 0; i < sups.n && st == KS_OK; i++) {
        const char *node = sups.v[i];
        ks_telem_supply_info *si;
        supply_priv *sp;

        /* Wireless mice and pens report scope "Device": not our power. */
        fmtpath(path, sizeof path, "%s/%s/scope", dir, node);
        if (read_text(path, buf, sizeof buf) == 0 &&
            strcmp(buf, "Device") == 0)
            continue;
        if (t->info.n_supplies == KS_TELEM_MAX_SUPPLIES) {
            note(t, "power_supply: %s ignored, more than %d supplies", node,
                 KS_TELEM_MAX_SUPPLIES);
            break;
        }
        si = &t->info.supplies[t->info.n_supplies];
        sp = &t->supplies[t->info.n_supplies];
        memset(si, 0, sizeof *si);
        attr_init(&sp->capacity);
        attr_init(&sp->status);
        attr_init(&sp->power_now);
        attr_init(&sp->current_now);
        attr_init(&sp->voltage_now);
        attr_init(&sp->online);
        t->info.n_supplies++;
        copy_str(si->name, sizeof si->name, node);
        fmtpath(path, sizeof path, "%s/%s/type", dir, node);
        if (read_text(path, buf, sizeof buf) != 0)
            buf[0] = '\0';
        if (strcmp(buf, "Battery") == 0)
            si->type = KS_SUPPLY_BATTERY;
        else if (strcmp(buf, "Mains") == 0)
            si->type = KS_SUPPLY_MAINS;
        else if (strncmp(buf, "USB", 3) == 0)
            si->type = KS_SUPPLY_USB;

        if ((st = attr_probe(t, &sp->online,
                             "/sys/class/power_supply/%s/online", node)))
            break;
        if (si->type == KS_SUPPLY_BATTERY) {
            if ((st = attr_probe(t, &sp->capacity,
                                 "/sys/class/power_supply/%s/capacity", node)) ||
                (st = attr_probe(t, &sp->status,
                                 "/sys/class/power_supply/%s/status", node)) ||
                (st = attr_probe(t, &sp->power_now,
                                 "/sys/class/power_supply/%s/power_now", node)))
                break;
            if (!sp->power_now.path &&
                ((st = attr_probe(t, &sp->current_now,
                                  "/sys/class/power_supply/%s/current_now",
                                  node)) ||
                 (st = attr_probe(t, &sp->voltage_now,
                                  "/sys/class/power_supply/%s/voltage_now",
                                  node))))
                break;
            si->has_power_now = sp->power_now.path != NULL;
            si->has_power = si->has_power_now ||
                            (sp->current_now.path && sp->voltage_now.path);
            if (!si->has_power)
                note(t, "power_supply: battery %s reports neither power_now "
                     "nor current_now and voltage_now", node);
        }
        ks_log(KS_LOG_DEBUG, TAG, "supply %s type=%s%s", node,
               buf[0] ? buf : "?",
               si->type != KS_SUPPLY_BATTERY ? "" :
               si->has_power_now ? " power_now" :
               si->has_power ? " current*voltage" : " no power");
    }
    namelist_free(&sups);
    return st;
}

static freq_priv *
new_freq(ks_telemetry *t, const char *name, ks_telem_freq_kind kind)
{
    ks_telem_freq_info *fi;
    freq_priv *fp;

    if (t->info.n_freq == KS_TELEM_MAX_FREQ) {
        note(t, "freq: %s ignored, more than %d devices", name,
             KS_TELEM_MAX_FREQ);
        return NULL;
    }
    fi = &t->info.freq[t->info.n_freq];
    fp = &t->freq[t->info.n_freq];
    memset(fi, 0, sizeof *fi);
    memset(fp, 0, sizeof *fp);
    attr_init(&fp->cur);
    attr_init(&fp->min);
    attr_init(&fp->max);
    attr_init(&fp->load);
    fp->hz_per_unit = 1;
    copy_str(fi->name, sizeof fi->name, name);
    fi->kind = kind;
    fi->cls = ks_telem_classify(name);
    t->info.n_freq++;
    return fp;
}

static void
freq_done(ks_telemetry *t, freq_priv *fp)
{
    ks_telem_freq_info *fi = &t->info.freq[fp - t->freq];

    fi->has_freq = fp->cur.path != NULL;
    fi->has_load = fp->fmt != LOAD_NONE;
    ks_log(KS_LOG_DEBUG, TAG, "freq %s class=%s%s%s", fi->name,
           ks_telem_class_str(fi->cls), fi->has_freq ? " freq" : "",
           fi->has_load ? " load" : "");
}

static ks_status
discover_freq(ks_telemetry *t)
{
    char dir[PATH_MAX], path[PATH_MAX];
    namelist l = { 0 };
    ks_status st;

    /* devfreq: directory name = device name (fb000000.gpu, dmc, ...). */
    if (pathf(t, dir, sizeof dir, "/sys/class/devfreq")) {
        if ((st = list_dir(dir, "", true, &l)) != KS_OK)
            return st;
        for (size_t i = 0; i < l.n; i++) {
            const char *d = l.v[i];
            freq_priv *fp = new_freq(t, d, KS_FREQ_DEVFREQ);

            if (!fp)
                break;
            /* cur_freq falls back to target_freq when the clock can't be
             * read (sysfs-class-devfreq). */
            if ((st = attr_probe(t, &fp->cur, "/sys/class/devfreq/%s/cur_freq",
                                 d)) ||
                (!fp->cur.path &&
                 (st = attr_probe(t, &fp->cur,
                                  "/sys/class/devfreq/%s/target_freq", d))) ||
                (st = attr_probe(t, &fp->min, "/sys/class/devfreq/%s/min_freq",
                                 d)) ||
                (st = attr_probe(t, &fp->max, "/sys/class/devfreq/%s/max_freq",
                                 d)) ||
                (st = attr_probe(t, &fp->load, "/sys/class/devfreq/%s/load",
                                 d)))
                goto fail;
            if (fp->load.path) {
                fp->fmt = LOAD_AT_FREQ;     /* Rockchip BSP */
            } else {
                /* Tegra: the GPU's platform device has load in 0.1 %. */
                if ((st = attr_probe(t, &fp->load,
                                     "/sys/class/devfreq/%s/device/load", d)))
                    goto fail;
                if (fp->load.path)
                    fp->fmt = LOAD_PERMILLE;
            }
            freq_done(t, fp);
        }
        namelist_free(&l);
    }

    /* DRM GPUs without devfreq: i915, xe, v3d. */
    if (pathf(t, dir, sizeof dir, "/sys/class/drm")) {
        if ((st = list_dir(dir, "card", true, &l)) != KS_OK)
            return st;
        for (size_t i = 0; i < l.n; i++) {
            const char *c = l.v[i];
            freq_priv *fp;

            if (strchr(c, '-'))     /* connectors: card0-HDMI-A-1 */
                continue;
            fmtpath(path, sizeof path, "%s/%s/gt_act_freq_mhz", dir, c);
            if (file_exists(path)) {
                char name[KS_TELEM_NAME_MAX];

                snprintf(name, sizeof name, "i915:%s", c);
                if (!(fp = new_freq(t, name, KS_FREQ_I915)))
                    break;
                fp->hz_per_unit = 1000000;
                if ((st = attr_set(&fp->cur, path)) ||
                    (st = attr_probe(t, &fp->min,
                                     "/sys/class/drm/%s/gt_min_freq_mhz", c)) ||
                    (st = attr_probe(t, &fp->max,
                                     "/sys/class/drm/%s/gt_max_freq_mhz", c)))
                    goto fail;
                freq_done(t, fp);
                continue;
            }
            fmtpath(path, sizeof path,
                     "%s/%s/device/tile0/gt0/freq0/act_freq", dir, c);
            if (file_exists(path)) {
                char name[KS_TELEM_NAME_MAX];

                snprintf(name, sizeof name, "xe:%s", c);
                if (!(fp = new_freq(t, name, KS_FREQ_XE)))
                    break;
                fp->hz_per_unit = 1000000;
                if ((st = attr_set(&fp->cur, path)) ||
                    (st = attr_probe(t, &fp->min, "/sys/class/drm/%s/device/"
                                     "tile0/gt0/freq0/min_freq", c)) ||
                    (st = attr_probe(t, &fp->max, "/sys/class/drm/%s/device/"
                                     "tile0/gt0/freq0/max_freq", c)))
                    goto fail;
                freq_done(t, fp);
                continue;
            }
            fmtpath(path, sizeof path, "%s/%s/device/gpu_stats", dir, c);
            if (file_exists(path)) {
                char name[KS_TELEM_NAME_MAX];

                snprintf(name, sizeof name, "v3d:%s", c);
                if (!(fp = new_freq(t, name, KS_FREQ_V3D)))
                    break;
                if ((st = attr_set(&fp->load, path)) != KS_OK)
                    goto fail;
                fp->fmt = LOAD_V3D_STATS;
                freq_done(t, fp);
            }
        }
        namelist_free(&l);
    }

    /* Compute accelerators: the Intel NPU reports cumulative busy time. */
    if (pathf(t, dir, sizeof dir, "/sys/class/accel")) {
        if ((st = list_dir(dir, "accel", true, &l)) != KS_OK)
            return st;
        for (size_t i = 0; i < l.n; i++) {
            const char *a = l.v[i];
            char name[KS_TELEM_NAME_MAX];
            freq_priv *fp;

            fmtpath(path, sizeof path, "%s/%s/device/npu_busy_time_us", dir,
                     a);
            if (!file_exists(path))
                continue;
            snprintf(name, sizeof name, "npu:%s", a);
            if (!(fp = new_freq(t, name, KS_FREQ_IVPU)))
                break;
            fp->hz_per_unit = 1000000;
            fp->fmt = LOAD_BUSY_US;
            if ((st = attr_set(&fp->load, path)) ||
                (st = attr_probe(t, &fp->cur, "/sys/class/accel/%s/device/"
                                 "npu_current_frequency_mhz", a)) ||
                (st = attr_probe(t, &fp->max, "/sys/class/accel/%s/device/"
                                 "npu_max_frequency_mhz", a)))
                goto fail;
            freq_done(t, fp);
        }
        namelist_free(&l);
    }
    return KS_OK;
fail:
    namelist_free(&l);
    return st;
}

/* ---- sampling ---------------------------------------------------------- */

typedef enum rate_result {
    RATE_OK,        /* *mw holds the average since the previous reading */
    RATE_WAIT,      /* first reading, or too short an interval */
    RATE_RESET,     /* the counter went back without a wrap range */
} rate_result;

/* Average power in mW over the interval since the previous energy reading.
 * |range_uj| > 0 is the wrap point: now < prev means the counter wrapped
 * once, delta = range - prev + now (powercap.rst). */
static rate_result
energy_to_mw(counter *c, uint64_t e_uj, uint64_t range_uj, uint64_t now,
             int64_t *mw)
{
    uint64_t delta, dt;

    if (!c->have_prev || now < c->prev_ns) {
        c->prev = e_uj;
        c->prev_ns = now;
        c->have_prev = true;
        return RATE_WAIT;
    }
    dt = now - c->prev_ns;
    if (dt < MIN_ENERGY_INTERVAL_NS)
        return RATE_WAIT;
    if (e_uj >= c->prev) {
        delta = e_uj - c->prev;
    } else if (range_uj > 0 && c->prev <= range_uj) {
        delta = range_uj - c->prev + e_uj;
    } else {
        /* A reset (driver reload): start again from here. */
        c->prev = e_uj;
        c->prev_ns = now;
        return RATE_RESET;
    }
    c->prev = e_uj;
    c->prev_ns = now;
    /* µJ per ns × 1e9 = µW; / 1e3 = mW. */
    *mw = (int64_t)((double)delta * 1e6 / (double)dt + 0.5);
    return RATE_OK;
}

static void
sample_power(ks_telemetry *t, uint32_t i, uint64_t now)
{
    const ks_telem_power_info *pi = &t->info.power[i];
    power_priv *pp = &t->power[i];
    ks_telem_value *v = &t->cur.power_mw[i];
    int64_t a, b, mw;

    /* An unreadable RAPL file is retried too: permission may be granted
     * while we run. */
    if (attr_read_i64(t, &pp->a, &a) != 0) {
        val_fail(v);
        return;
    }
    switch (pi->kind) {
    case KS_POWER_HWMON:
        val_set(v, (a < 0 ? -a : a) / 1000, now);
        break;
    case KS_POWER_HWMON_VI:
        if (attr_read_i64(t, &pp->b, &b) != 0) {
            val_fail(v);
            break;
        }
        /* mV × mA = µW. */
        mw = a * (b < 0 ? -b : b) / 1000;
        val_set(v, mw < 0 ? 0 : mw, now);
        break;
    case KS_POWER_HWMON_ENERGY:
    case KS_POWER_RAPL:
        if (a < 0) {
            val_fail(v);
            break;
        }
        switch (energy_to_mw(&pp->energy, (uint64_t)a,
                             pi->max_energy_range_uj, now, &mw)) {
        case RATE_OK:
            val_set(v, mw, now);
            break;
        case RATE_WAIT:
            break;          /* keep the previous average as it is */
        case RATE_RESET:
            val_fail(v);
            break;
        }
        break;
    }
}

static ks_telem_battery_status
parse_status(const char *s)
{
    if (strcmp(s, "Charging") == 0)
        return KS_BATTERY_CHARGING;
    if (strcmp(s, "Discharging") == 0)
        return KS_BATTERY_DISCHARGING;
    if (strcmp(s, "Not charging") == 0)
        return KS_BATTERY_NOT_CHARGING;
    if (strcmp(s, "Full") == 0)
        return KS_BATTERY_FULL;
    return KS_BATTERY_UNKNOWN;
}

static void
sample_supply(ks_telemetry *t, uint32_t i, uint64_t now)
{
    supply_priv *sp = &t->supplies[i];
    ks_telem_supply_sample *ss = &t->cur.supplies[i];
    char buf[64];
    int64_t a, b;

    sample_i64(t, &sp->online, 1, 1, &ss->online, now);
    sample_i64(t, &sp->capacity, 1, 1, &ss->capacity_pct, now);
    if (sp->status.path && attr_read(t, &sp->status, buf, sizeof buf) == 0)
        ss->status = parse_status(buf);
    /* The sign differs between drivers (ACPI reports magnitudes): keep the
     * magnitude and let status give the direction. */
    if (sp->power_now.path) {
        if (attr_read_i64(t, &sp->power_now, &a) == 0)
            val_set(&ss->power_mw, (a < 0 ? -a : a) / 1000, now);
        else
            val_fail(&ss->power_mw);
    } else if (sp->current_now.path && sp->voltage_now.path) {
        if (attr_read_i64(t, &sp->current_now, &a) == 0 &&
            attr_read_i64(t, &sp->voltage_now, &b) == 0) {
            /* µA × µV / 1e9 = mW; in double, the product passes 2^63. */
            double mw = (double)(a < 0 ? -a : a) * (double)(b < 0 ? -b : b)
                        / 1e9;
            val_set(&ss->power_mw, (int64_t)(mw + 0.5), now);
        } else {
            val_fail(&ss->power_mw);
        }
    }
}

/* "37@300000000Hz" → 370 permille. */
static bool
parse_at_load(const char *s, int64_t *permille)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || (*end != '@' && *end != '\0'))
        return false;
    *permille = v < 0 ? 0 : v > 100 ? 1000 : v * 10;
    return true;
}

static int64_t
busy_permille(uint64_t busy_ns, uint64_t dt_ns)
{
    double r = (double)busy_ns * 1000.0 / (double)dt_ns;

    return r > 1000.0 ? 1000 : (int64_t)(r + 0.5);
}

/* v3d gpu_stats: a header line, then "queue\ttimestamp_ns\tjobs\truntime_ns"
 * per queue (drivers/gpu/drm/v3d/v3d_sysfs.c). Load = the busiest queue's
 * runtime growth over the timestamp's growth. */
static bool
v3d_load(freq_priv *fp, char *text, int64_t *permille)
{
    uint64_t ts = 0, rt[V3D_MAX_QUEUES] = { 0 };
    int nq = 0;
    bool have = false;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char name[32];
        unsigned long long a, b, c;

        if (sscanf(line, "%31s %llu %llu %llu", name, &a, &b, &c) != 4)
            continue;
        if (nq == V3D_MAX_QUEUES)
            break;
        ts = a;
        rt[nq++] = c;
    }
    if (nq == 0)
        return false;
    if (fp->v3d_have_prev && ts > fp->v3d_prev_ts) {
        uint64_t dt = ts - fp->v3d_prev_ts, best = 0;

        for (int q = 0; q < nq; q++)
            if (rt[q] >= fp->v3d_prev_rt[q] && rt[q] - fp->v3d_prev_rt[q] > best)
                best = rt[q] - fp->v3d_prev_rt[q];
        *permille = busy_permille(best, dt);
        have = true;
    }
    fp->v3d_prev_ts = ts;
    memcpy(fp->v3d_prev_rt, rt, sizeof rt);
    fp->v3d_have_prev = true;
    return have;
}

static void
sample_freq(ks_telemetry *t, uint32_t i, uint64_t now)
{
    freq_priv *fp = &t->freq[i];
    ks_telem_freq_sample *fs = &t->cur.freq[i];
    int64_t mul = (int64_t)fp->hz_per_unit, x;
    char buf[1024];

    sample_i64(t, &fp->cur, mul, 1, &fs->cur_hz, now);
    sample_i64(t, &fp->min, mul, 1, &fs->min_hz, now);
    sample_i64(t, &fp->max, mul, 1, &fs->max_hz, now);
    if (fp->fmt == LOAD_NONE)
        return;
    if (attr_read(t, &fp->load, buf, sizeof buf) != 0) {
        val_fail(&fs->load_permille);
        return;
    }
    switch (fp->fmt) {
    case LOAD_NONE:
        break;
    case LOAD_AT_FREQ:
        if (parse_at_load(buf, &x))
            val_set(&fs->load_permille, x, now);
        else
            val_fail(&fs->load_permille);
        break;
    case LOAD_PERMILLE:
        if (parse_i64(buf, &x))
            val_set(&fs->load_permille, x < 0 ? 0 : x > 1000 ? 1000 : x, now);
        else
            val_fail(&fs->load_permille);
        break;
    case LOAD_BUSY_US:
        if (!parse_i64(buf, &x) || x < 0) {
            val_fail(&fs->load_permille);
        } else if (!fp->busy.have_prev || (uint64_t)x < fp->busy.prev ||
                   now <= fp->busy.prev_ns) {
            fp->busy.prev = (uint64_t)x;
            fp->busy.prev_ns = now;
            fp->busy.have_prev = true;
        } else if (now - fp->busy.prev_ns >= MIN_ENERGY_INTERVAL_NS) {
            val_set(&fs->load_permille,
                    busy_permille(((uint64_t)x - fp->busy.prev) * 1000,
                                  now - fp->busy.prev_ns), now);
            fp->busy.prev = (uint64_t)x;
            fp->busy.prev_ns = now;
        }
        break;
    case LOAD_V3D_STATS:
        if (v3d_load(fp, buf, &x))
            val_set(&fs->load_permille, x, now);
        break;
    }
}

static void
temp_set(ks_telem_temp *d, int32_t mc, uint64_t read_ns, bool stale)
{
    d->temp_mc = mc;
    d->valid = true;
    d->stale = stale;
    d->read_ns = read_ns;
}

static void
summarize_thermal(ks_telemetry *t)
{
    ks_telem_sample *s = &t->cur;
    int32_t best_passive = 0, crit = 0;

    s->hottest_zone = -1;
    s->passive_zone = -1;
    memset(&s->hottest, 0, sizeof s->hottest);
    memset(&s->passive_trip, 0, sizeof s->passive_trip);
    memset(&s->critical_trip, 0, sizeof s->critical_trip);
    for (uint32_t i = 0; i < t->info.n_zones; i++) {
        const ks_telem_zone_info *z = &t->info.zones[i];
        const ks_telem_temp *zt = &s->zone_temp[i];
        int32_t passive = 0;

        if (!is_relevant(z->cls))
            continue;
        for (uint32_t k = 0; k < z->n_trips; k++) {
            const ks_telem_trip *tp = &z->trips[k];

            /* x86_pkg_temp lists passive trips at 0: not configured. */
            if (tp->temp_mc <= 0)
                continue;
            if (tp->type == KS_TRIP_PASSIVE &&
                (passive == 0 || tp->temp_mc < passive))
                passive = tp->temp_mc;
            if (tp->type == KS_TRIP_CRITICAL &&
                (crit == 0 || tp->temp_mc < crit))
                crit = tp->temp_mc;
        }
        if (zt->valid &&
            (s->hottest_zone < 0 || zt->temp_mc > s->hottest.temp_mc)) {
            s->hottest_zone = (int32_t)i;
            s->hottest = *zt;
        }
        if (passive == 0)
            continue;
        /* Prefer the hottest zone with a passive trip; a zone with no
         * reading counts only when nothing better is known. */
        if (s->passive_zone < 0 ||
            (zt->valid && (!s->zone_temp[s->passive_zone].valid ||
                           zt->temp_mc >
                           s->zone_temp[s->passive_zone].temp_mc))) {
            s->passive_zone = (int32_t)i;
            best_passive = passive;
        }
    }
    if (s->passive_zone >= 0)
        temp_set(&s->passive_trip, best_passive, 0, false);
    if (crit > 0)
        temp_set(&s->critical_trip, crit, 0, false);
}

/* Adds |v| into the running total |sum|. */
static void
acc(ks_telem_value *sum, const ks_telem_value *v)
{
    if (!v->valid)
        return;
    if (!sum->valid || v->read_ns < sum->read_ns)
        sum->read_ns = v->read_ns;
    sum->value += v->value;
    sum->valid = true;
    sum->stale = sum->stale || v->stale;
}

static void
summarize_power(ks_telemetry *t)
{
    ks_telem_sample *s = &t->cur;
    ks_telem_value sum;

    s->has_battery = false;
    s->charging = false;
    s->external_power = false;
    memset(&s->battery_pct, 0, sizeof s->battery_pct);
    memset(&sum, 0, sizeof sum);
    for (uint32_t i = 0; i < t->info.n_supplies; i++) {
        const ks_telem_supply_sample *ss = &s->supplies[i];

        if (t->info.supplies[i].type != KS_SUPPLY_BATTERY) {
            if (ss->online.valid && ss->online.value > 0)
                s->external_power = true;
            continue;
        }
        s->has_battery = true;
        if (!s->battery_pct.valid && ss->capacity_pct.valid)
            s->battery_pct = ss->capacity_pct;
        if (ss->status == KS_BATTERY_CHARGING)
            s->charging = true;
        if (ss->status == KS_BATTERY_CHARGING ||
            ss->status == KS_BATTERY_FULL ||
            ss->status == KS_BATTERY_NOT_CHARGING)
            s->external_power = true;
        if (ss->status == KS_BATTERY_DISCHARGING && ss->power_mw.valid &&
            ss->power_mw.value > 0)
            acc(&sum, &ss->power_mw);
    }
    s->system_power_src = KS_SYSPOWER_BATTERY;
    if (!sum.valid) {
        s->system_power_src = KS_SYSPOWER_RAPL;
        for (uint32_t i = 0; i < t->info.n_power; i++)
            if (t->info.power[i].kind == KS_POWER_RAPL &&
                t->info.power[i].rapl_role == KS_RAPL_PACKAGE &&
                !t->info.power[i].rapl_mmio)
                acc(&sum, &s->power_mw[i]);
    }
    if (!sum.valid) {
        s->system_power_src = KS_SYSPOWER_HWMON;
        for (uint32_t i = 0; i < t->info.n_power; i++)
            if (t->info.power[i].kind == KS_POWER_HWMON ||
                t->info.power[i].kind == KS_POWER_HWMON_ENERGY)
                acc(&sum, &s->power_mw[i]);
    }
    if (!sum.valid) {
        s->system_power_src = KS_SYSPOWER_RAIL_INPUT;
        for (uint32_t i = 0; i < t->info.n_power; i++)
            if (t->info.power[i].kind == KS_POWER_HWMON_VI &&
                t->power[i].is_input_rail)
                acc(&sum, &s->power_mw[i]);
    }
    if (!sum.valid) {
        /* AGX Orin has no single input rail (reference section 2). */
        s->system_power_src = KS_SYSPOWER_RAIL_SUM;
        for (uint32_t i = 0; i < t->info.n_power; i++)
            if (t->info.power[i].kind == KS_POWER_HWMON_VI)
                acc(&sum, &s->power_mw[i]);
    }
    if (!sum.valid)
        s->system_power_src = KS_SYSPOWER_NONE;
    s->system_power_mw = sum;
}

ks_status
ks_telemetry_sample(ks_telemetry *t, ks_telem_sample *s)
{
    uint64_t now;
    int64_t x;

    if (!t)
        return ks_error(KS_ERR_INVALID_ARG, "telemetry: sample of NULL");
    now = now_ns(t);
    t->cur.at_ns = now;
    for (uint32_t i = 0; i < t->info.n_zones; i++) {
        ks_telem_temp *zt = &t->cur.zone_temp[i];

        if (attr_read_i64(t, &t->zone_temp[i], &x) == 0 &&
            x != TEMP_INVALID_MC && x >= INT32_MIN && x <= INT32_MAX)
            temp_set(zt, (int32_t)x, now, false);
        else {
            zt->stale = true;
            attr_close(&t->zone_temp[i]);
        }
    }
    for (uint32_t i = 0; i < t->info.n_cooling; i++)
        sample_i64(t, &t->cooling_state[i], 1, 1, &t->cur.cooling_state[i],
                   now);
    for (uint32_t i = 0; i < t->info.n_power; i++)
        sample_power(t, i, now);
    for (uint32_t i = 0; i < t->info.n_supplies; i++)
        sample_supply(t, i, now);
    for (uint32_t i = 0; i < t->info.n_freq; i++)
        sample_freq(t, i, now);
    for (uint32_t i = 0; i < t->info.n_fans; i++)
        sample_i64(t, &t->fan[i], 1, 1, &t->cur.fan_rpm[i], now);
    sample_i64(t, &t->undervolt, 1, 1, &t->cur.undervolt, now);
    summarize_thermal(t);
    summarize_power(t);
    if (s)
        *s = t->cur;
    return KS_OK;
}

/* ---- open / close ------------------------------------------------------ */

ks_status
ks_telemetry_open_ex(const ks_telem_params *p, ks_telemetry **out)
{
    static const ks_telem_params defaults = { 0 };
    const char *root;
    ks_telemetry *t;
    ks_status st;
    size_t n;

    if (!out)
        return ks_error(KS_ERR_INVALID_ARG, "telemetry: out is NULL");
    *out = NULL;
    if (!p)
        p = &defaults;
    root = p->root;
    if (!root || !root[0]) {
        root = getenv("KESTREL_SYSFS_ROOT");
        if (!root || !root[0])
            root = "/";
    }
    t = calloc(1, sizeof *t);
    if (!t)
        return ks_error(KS_ERR_NOMEM, "telemetry: no memory");
    t->p = *p;
    attr_init(&t->undervolt);
    /* Strip trailing slashes: "/" becomes "", so paths read "/sys/...". */
    n = strlen(root);
    while (n > 0 && root[n - 1] == '/')
        n--;
    t->root = malloc(n + 1);
    if (!t->root) {
        free(t);
        return ks_error(KS_ERR_NOMEM, "telemetry: no memory");
    }
    memcpy(t->root, root, n);
    t->root[n] = '\0';
    copy_str(t->info.root, sizeof t->info.root, n ? t->root : "/");
    ks_log(KS_LOG_DEBUG, TAG, "sysfs root %s", t->info.root);

    if ((st = discover_thermal(t)) != KS_OK ||
        (st = discover_hwmon(t)) != KS_OK ||
        (st = discover_powercap(t)) != KS_OK ||
        (st = discover_supplies(t)) != KS_OK ||
        (st = discover_freq(t)) != KS_OK)
        goto fail;
    t->cur.n_zones = t->info.n_zones;
    t->cur.n_cooling = t->info.n_cooling;
    t->cur.n_power = t->info.n_power;
    t->cur.n_supplies = t->info.n_supplies;
    t->cur.n_freq = t->info.n_freq;
    t->cur.n_fans = t->info.n_fans;
    ks_telemetry_sample(t, NULL);
    ks_log(KS_LOG_DEBUG, TAG, "found %u zones, %u cooling devices, %u power "
           "sources, %u supplies, %u freq devices, %u fans", t->info.n_zones,
           t->info.n_cooling, t->info.n_power, t->info.n_supplies,
           t->info.n_freq, t->info.n_fans);
    *out = t;
    return KS_OK;
fail:
    ks_telemetry_destroy(t);
    return st;
}

ks_status
ks_telemetry_open(const char *root, ks_telemetry **out)
{
    ks_telem_params p = { 0 };

    p.root = root;
    return ks_telemetry_open_ex(&p, out);
}

void
ks_telemetry_destroy(ks_telemetry *t)
{
    if (!t)
        return;
    /* Every slot up to the count is initialised; a slot being filled when
     * discovery failed is released by its discoverer. */
    for (uint32_t i = 0; i < t->info.n_zones; i++)
        attr_fini(&t->zone_temp[i]);
    for (uint32_t i = 0; i < t->info.n_cooling; i++)
        attr_fini(&t->cooling_state[i]);
    for (uint32_t i = 0; i < t->info.n_power; i++) {
        attr_fini(&t->power[i].a);
        attr_fini(&t->power[i].b);
    }
    for (uint32_t i = 0; i < t->info.n_supplies; i++) {
        supply_priv *sp = &t->supplies[i];

        attr_fini(&sp->capacity);
        attr_fini(&sp->status);
        attr_fini(&sp->power_now);
        attr_fini(&sp->current_now);
        attr_fini(&sp->voltage_now);
        attr_fini(&sp->online);
    }
    for (uint32_t i = 0; i < t->info.n_freq; i++) {
        attr_fini(&t->freq[i].cur);
        attr_fini(&t->freq[i].min);
        attr_fini(&t->freq[i].max);
        attr_fini(&t->freq[i].load);
    }
    for (uint32_t i = 0; i < t->info.n_fans; i++)
        attr_fini(&t->fan[i]);
    attr_fini(&t->undervolt);
    free(t->root);
    free(t);
}

const ks_telem_info *
ks_telemetry_get_info(const ks_telemetry *t)
{
    return &t->info;
}

const ks_telem_sample *
ks_telemetry_last(const ks_telemetry *t)
{
    return &t->cur;
}

/* ---- describe: the one sensor renderer --------------------------------- */

/* Text and JSON of the same facts: `kestrel devices` (driver/devices.c)
 * prints its Sensors section with ks_telemetry_describe and its "sensors"
 * object with ks_telemetry_describe_json. */

/* The lowest trip of |type| above 0 (x86_pkg_temp lists unset passive
 * trips at 0); 0 if none. */
static int32_t
zone_trip_mc(const ks_telem_zone_info *z, ks_telem_trip_type type)
{
    int32_t best = 0;

    for (uint32_t k = 0; k < z->n_trips; k++)
        if (z->trips[k].type == type && z->trips[k].temp_mc > 0 &&
            (best == 0 || z->trips[k].temp_mc < best))
            best = z->trips[k].temp_mc;
    return best;
}

static const char *
power_kind_text(const ks_telem_power_info *p)
{
    switch (p->kind) {
    case KS_POWER_HWMON: return "hwmon power";
    case KS_POWER_HWMON_ENERGY: return "hwmon energy-derived";
    case KS_POWER_HWMON_VI: return "hwmon voltage x current";
    case KS_POWER_RAPL: break;
    }
    switch (p->rapl_role) {
    case KS_RAPL_PACKAGE: return p->rapl_mmio ? "RAPL package (mmio view), energy-derived"
                                              : "RAPL package, energy-derived";
    case KS_RAPL_CORE: return "RAPL core, energy-derived";
    case KS_RAPL_UNCORE: return "RAPL uncore, energy-derived";
    case KS_RAPL_DRAM: return "RAPL dram, energy-derived";
    case KS_RAPL_PSYS: return "RAPL psys, energy-derived";
    case KS_RAPL_NONE:
    case KS_RAPL_OTHER: break;
    }
    return "RAPL, energy-derived";
}

static const char *
power_kind_json(ks_telem_power_kind k)
{
    switch (k) {
    case KS_POWER_HWMON: return "hwmon_power";
    case KS_POWER_HWMON_ENERGY: return "hwmon_energy";
    case KS_POWER_HWMON_VI: return "hwmon_vi";
    case KS_POWER_RAPL: return "rapl";
    }
    return "unknown";
}

static const char *
rapl_role_str(ks_telem_rapl_role r)
{
    switch (r) {
    case KS_RAPL_NONE: return "none";
    case KS_RAPL_PACKAGE: return "package";
    case KS_RAPL_CORE: return "core";
    case KS_RAPL_UNCORE: return "uncore";
    case KS_RAPL_DRAM: return "dram";
    case KS_RAPL_PSYS: return "psys";
    case KS_RAPL_OTHER: break;
    }
    return "other";
}

static const char *
battery_status_str(ks_telem_battery_status s)
{
    switch (s) {
    case KS_BATTERY_CHARGING: return "charging";
    case KS_BATTERY_DISCHARGING: return "discharging";
    case KS_BATTERY_NOT_CHARGING: return "not charging";
    case KS_BATTERY_FULL: return "full";
    case KS_BATTERY_UNKNOWN: break;
    }
    return "unknown";
}

static const char *
supply_type_str(ks_telem_supply_type t)
{
    switch (t) {
    case KS_SUPPLY_BATTERY: return "battery";
    case KS_SUPPLY_MAINS: return "mains";
    case KS_SUPPLY_USB: return "usb";
    case KS_SUPPLY_OTHER: break;
    }
    return "other";
}

static const char *
freq_kind_str(ks_telem_freq_kind k)
{
    switch (k) {
    case KS_FREQ_DEVFREQ: return "devfreq";
    case KS_FREQ_I915: return "i915";
    case KS_FREQ_XE: return "xe";
    case KS_FREQ_V3D: return "v3d";
    case KS_FREQ_IVPU: return "ivpu";
    }
    return "unknown";
}

static const char *
syspower_str(ks_telem_power_src s)
{
    switch (s) {
    case KS_SYSPOWER_BATTERY: return "battery discharge";
    case KS_SYSPOWER_RAPL: return "RAPL package";
    case KS_SYSPOWER_HWMON: return "hwmon sum";
    case KS_SYSPOWER_RAIL_INPUT: return "input rail";
    case KS_SYSPOWER_RAIL_SUM: return "rails summed";
    case KS_SYSPOWER_NONE: break;
    }
    return "none";
}

static const char *
stale_str(bool stale)
{
    return stale ? " (stale)" : "";
}

static const char *
tf(bool b)
{
    return b ? "true" : "false";
}

static void
text_temp(FILE *f, const ks_telem_temp *t)
{
    if (t->valid)
        fprintf(f, "%.1f °C%s", t->temp_mc / 1000.0, stale_str(t->stale));
    else
        fputs("unreadable", f);
}

/* What this sample could read, for the "missing" lines. A power sensor
 * counts when it read or is readable (energy-derived ones need a second
 * sample), and so does a battery that reports its power. */
typedef struct sensor_counts {
    uint32_t zones, power, batteries, freq, fans;
} sensor_counts;

static sensor_counts
count_readable(const ks_telem_info *in, const ks_telem_sample *s)
{
    sensor_counts c = { 0 };

    for (uint32_t i = 0; i < in->n_zones; i++)
        c.zones += s->zone_temp[i].valid;
    for (uint32_t i = 0; i < in->n_power; i++)
        c.power += s->power_mw[i].valid || in->power[i].readable;
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        c.batteries += in->supplies[i].type == KS_SUPPLY_BATTERY;
        c.power += in->supplies[i].type == KS_SUPPLY_BATTERY && in->supplies[i].has_power;
    }
    for (uint32_t i = 0; i < in->n_freq; i++)
        c.freq += s->freq[i].cur_hz.valid || s->freq[i].load_permille.valid;
    for (uint32_t i = 0; i < in->n_fans; i++)
        c.fans += s->fan_rpm[i].valid;
    return c;
}

/* What is missing, one sentence each, shared by both forms. */
static uint32_t
missing_lines(const ks_telem_info *in, const sensor_counts *c, const char *out[5])
{
    uint32_t n = 0;

    if (!c->zones)
        out[n++] = in->n_zones ? "no thermal zones readable (every zone's temp failed to read)"
                               : "no thermal zones readable";
    if (!c->power)
        out[n++] = in->n_power ? "no power sensors readable (found, but unreadable: see the notes)"
                               : "no power sensors";
    if (!c->batteries)
        out[n++] = "no battery";
    if (!c->freq)
        out[n++] = "no devfreq or GPU/NPU frequency readable";
    if (!c->fans)
        out[n++] = "no fan tachometer";
    return n;
}

static bool
has_passive(const ks_telem_sample *s)
{
    return s->passive_zone >= 0 && s->passive_trip.valid;
}

static void
text_governor(FILE *f, const ks_telem_info *in, const ks_telem_sample *s,
              int32_t margin_mc)
{
    fputs("  governor:  ", f);
    if (s->hottest_zone >= 0) {
        fprintf(f, "hottest relevant zone %s at ", in->zones[s->hottest_zone].name);
        text_temp(f, &s->hottest);
    } else {
        fputs("no CPU, GPU, NPU, SoC or package zone read", f);
    }
    if (has_passive(s) && s->hottest_zone >= 0 && s->hottest.valid)
        fprintf(f, "; passive trip %.1f °C (%s); default limit %.1f °C (passive trip - %g °C); "
                "thermal headroom now %.2f (0 at %g °C, 1 at the limit; a running session "
                "forecasts it from the plant it identifies)\n",
                s->passive_trip.temp_mc / 1000.0, in->zones[s->passive_zone].name,
                (s->passive_trip.temp_mc - margin_mc) / 1000.0, margin_mc / 1000.0,
                ks_telem_headroom(s->hottest.temp_mc, s->passive_trip.temp_mc - margin_mc,
                                  KS_TELEM_HEADROOM_IDLE_MC),
                KS_TELEM_HEADROOM_IDLE_MC / 1000.0);
    else if (has_passive(s))
        fprintf(f, "; passive trip %.1f °C (%s); default limit %.1f °C (passive trip - %g °C)\n",
                s->passive_trip.temp_mc / 1000.0, in->zones[s->passive_zone].name,
                (s->passive_trip.temp_mc - margin_mc) / 1000.0, margin_mc / 1000.0);
    else
        fputs("; no passive trip point: the governor stays off unless a limit is given\n", f);
}

static void
text_zones(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    for (uint32_t i = 0; i < in->n_zones; i++) {
        const ks_telem_zone_info *z = &in->zones[i];
        int32_t passive = zone_trip_mc(z, KS_TRIP_PASSIVE);
        int32_t critical = zone_trip_mc(z, KS_TRIP_CRITICAL);

        fprintf(f, "  zone       %-22s %-8s ", z->name, ks_telem_class_str(z->cls));
        text_temp(f, &s->zone_temp[i]);
        if (passive)
            fprintf(f, ", passive %.1f °C", passive / 1000.0);
        if (critical)
            fprintf(f, ", critical %.1f °C", critical / 1000.0);
        if (z->sustainable_power_mw)
            fprintf(f, ", sustainable %u mW", z->sustainable_power_mw);
        fputc('\n', f);
    }
    for (uint32_t i = 0; i < in->n_cooling; i++) {
        fprintf(f, "  cooling    %-22s state ", in->cooling[i].name);
        if (s->cooling_state[i].valid)
            fprintf(f, "%" PRId64 "%s", s->cooling_state[i].value,
                    stale_str(s->cooling_state[i].stale));
        else
            fputs("unreadable", f);
        fprintf(f, " of %d\n", in->cooling[i].max_state);
    }
}

static void
text_power(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    for (uint32_t i = 0; i < in->n_power; i++) {
        const ks_telem_power_info *p = &in->power[i];
        const ks_telem_value *v = &s->power_mw[i];

        fprintf(f, "  power      %-22s ", p->name);
        if (v->valid)
            fprintf(f, "%.2f W%s", v->value / 1000.0, stale_str(v->stale));
        else
            fputs(p->readable ? "no reading yet" : "not readable", f);
        fprintf(f, "  %s (%s)", power_kind_text(p), p->node);
        for (uint32_t c = 0; c < p->n_constraints; c++)
            fprintf(f, "%s%s %.1f W", c ? ", " : "; limits: ", p->constraints[c].name,
                    p->constraints[c].power_limit_uw / 1e6);
        fputc('\n', f);
    }
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        const ks_telem_supply_info *si = &in->supplies[i];
        const ks_telem_supply_sample *ss = &s->supplies[i];

        if (si->type == KS_SUPPLY_BATTERY) {
            fprintf(f, "  battery    %-22s ", si->name);
            if (ss->capacity_pct.valid)
                fprintf(f, "%" PRId64 " %%%s", ss->capacity_pct.value,
                        stale_str(ss->capacity_pct.stale));
            else
                fputs("charge unknown", f);
            fprintf(f, ", %s", battery_status_str(ss->status));
            if (ss->power_mw.valid)
                fprintf(f, ", %.2f W%s", ss->power_mw.value / 1000.0,
                        stale_str(ss->power_mw.stale));
            fputc('\n', f);
        } else {
            fprintf(f, "  supply     %-22s %s, %s\n", si->name, supply_type_str(si->type),
                    !ss->online.valid ? "online unknown" :
                    ss->online.value ? "online" : "offline");
        }
    }
}

static void
text_freq_fans(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    for (uint32_t i = 0; i < in->n_freq; i++) {
        const ks_telem_freq_info *fi = &in->freq[i];
        const ks_telem_freq_sample *fs = &s->freq[i];
        bool comma = false;

        fprintf(f, "  frequency  %-22s %-8s ", fi->name, ks_telem_class_str(fi->cls));
        if (fs->cur_hz.valid) {
            fprintf(f, "%.0f MHz%s", fs->cur_hz.value / 1e6, stale_str(fs->cur_hz.stale));
            if (fs->min_hz.valid && fs->max_hz.valid)
                fprintf(f, " (%.0f..%.0f MHz)", fs->min_hz.value / 1e6,
                        fs->max_hz.value / 1e6);
            comma = true;
        }
        if (fs->load_permille.valid) {
            fprintf(f, "%sload %.1f %%%s", comma ? ", " : "",
                    fs->load_permille.value / 10.0, stale_str(fs->load_permille.stale));
            comma = true;
        }
        if (!comma)
            fputs("no reading", f);
        fprintf(f, "  %s\n", freq_kind_str(fi->kind));
    }
    for (uint32_t i = 0; i < in->n_fans; i++) {
        fprintf(f, "  fan        %-22s ", in->fans[i].name);
        if (s->fan_rpm[i].valid)
            fprintf(f, "%" PRId64 " rpm%s\n", s->fan_rpm[i].value,
                    stale_str(s->fan_rpm[i].stale));
        else
            fputs("unreadable\n", f);
    }
}

void
ks_telemetry_describe(const ks_telemetry *t, int32_t margin_mc, FILE *f)
{
    const ks_telem_info *in = &t->info;
    const ks_telem_sample *s = &t->cur;
    const char *missing[5];
    sensor_counts c = count_readable(in, s);
    uint32_t n_missing = missing_lines(in, &c, missing);

    fprintf(f, "Sensors (sysfs under %s):\n", in->root[0] ? in->root : "/");
    text_zones(f, in, s);
    text_power(f, in, s);
    text_freq_fans(f, in, s);
    if (in->has_undervolt)
        fprintf(f, "  under-voltage alarm: %s\n", !s->undervolt.valid ? "unreadable" :
                s->undervolt.value ? "RAISED" : "no");
    if (s->system_power_mw.valid)
        fprintf(f, "  system power %.2f W (%s)\n", s->system_power_mw.value / 1000.0,
                syspower_str(s->system_power_src));
    for (uint32_t i = 0; i < n_missing; i++)
        fprintf(f, "  %s\n", missing[i]);
    for (uint32_t i = 0; i < in->n_notes; i++)
        fprintf(f, "  note: %s\n", in->notes[i]);
    if (t->n_notes_dropped)
        fprintf(f, "  note: %u more notes dropped\n", t->n_notes_dropped);
    text_governor(f, in, s, margin_mc);
}

static void
json_value(FILE *f, const char *key, const ks_telem_value *v)
{
    fprintf(f, "\"%s\":", key);
    if (v->valid)
        fprintf(f, "%" PRId64, v->value);
    else
        fputs("null", f);
}

static void
json_mc(FILE *f, const char *key, bool valid, int32_t mc)
{
    fprintf(f, "\"%s\":", key);
    if (valid)
        fprintf(f, "%" PRId32, mc);
    else
        fputs("null", f);
}

static void
json_zone_name(FILE *f, const char *key, const ks_telem_info *in, int32_t zone)
{
    fprintf(f, "\"%s\":", key);
    if (zone >= 0 && (uint32_t)zone < in->n_zones)
        ks_json_str(f, in->zones[zone].name);
    else
        fputs("null", f);
}

static void
json_zones(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    fputs(",\"zones\":[", f);
    for (uint32_t i = 0; i < in->n_zones; i++) {
        const ks_telem_zone_info *z = &in->zones[i];
        const ks_telem_temp *zt = &s->zone_temp[i];
        int32_t passive = zone_trip_mc(z, KS_TRIP_PASSIVE);
        int32_t critical = zone_trip_mc(z, KS_TRIP_CRITICAL);

        fprintf(f, "%s{\"name\":", i ? "," : "");
        ks_json_str(f, z->name);
        fputs(",\"node\":", f);
        ks_json_str(f, z->node);
        fprintf(f, ",\"class\":\"%s\",", ks_telem_class_str(z->cls));
        json_mc(f, "temp_mc", zt->valid, zt->temp_mc);
        fprintf(f, ",\"stale\":%s,", tf(zt->stale));
        json_mc(f, "passive_trip_mc", passive != 0, passive);
        fputc(',', f);
        json_mc(f, "critical_trip_mc", critical != 0, critical);
        fputc(',', f);
        json_mc(f, "sustainable_power_mw", z->sustainable_power_mw != 0,
                (int32_t)z->sustainable_power_mw);
        fputc('}', f);
    }
    fputs("],\"cooling\":[", f);
    for (uint32_t i = 0; i < in->n_cooling; i++) {
        fprintf(f, "%s{\"name\":", i ? "," : "");
        ks_json_str(f, in->cooling[i].name);
        fputc(',', f);
        json_value(f, "state", &s->cooling_state[i]);
        fprintf(f, ",\"max_state\":%d}", in->cooling[i].max_state);
    }
    fputc(']', f);
}

static void
json_power(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    bool first = true;

    fputs(",\"power\":[", f);
    for (uint32_t i = 0; i < in->n_power; i++) {
        const ks_telem_power_info *p = &in->power[i];

        fprintf(f, "%s{\"name\":", i ? "," : "");
        ks_json_str(f, p->name);
        fputs(",\"node\":", f);
        ks_json_str(f, p->node);
        fprintf(f, ",\"kind\":\"%s\",\"energy_derived\":%s,\"rapl_domain\":",
                power_kind_json(p->kind),
                tf(p->kind == KS_POWER_HWMON_ENERGY || p->kind == KS_POWER_RAPL));
        if (p->kind == KS_POWER_RAPL)
            fprintf(f, "\"%s\",\"rapl_mmio\":%s", rapl_role_str(p->rapl_role),
                    tf(p->rapl_mmio));
        else
            fputs("null", f);
        fprintf(f, ",\"readable\":%s,", tf(p->readable));
        json_value(f, "power_mw", &s->power_mw[i]);
        fprintf(f, ",\"stale\":%s,\"limits\":[", tf(s->power_mw[i].stale));
        for (uint32_t c = 0; c < p->n_constraints; c++) {
            fprintf(f, "%s{\"name\":", c ? "," : "");
            ks_json_str(f, p->constraints[c].name);
            fprintf(f, ",\"power_limit_uw\":%" PRIu64 "}", p->constraints[c].power_limit_uw);
        }
        fputs("]}", f);
    }
    fputs("],\"batteries\":[", f);
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        const ks_telem_supply_sample *ss = &s->supplies[i];

        if (in->supplies[i].type != KS_SUPPLY_BATTERY)
            continue;
        fprintf(f, "%s{\"name\":", first ? "" : ",");
        first = false;
        ks_json_str(f, in->supplies[i].name);
        fputc(',', f);
        json_value(f, "capacity_pct", &ss->capacity_pct);
        fprintf(f, ",\"status\":\"%s\",", battery_status_str(ss->status));
        json_value(f, "power_mw", &ss->power_mw);
        fputc('}', f);
    }
    fputs("],\"supplies\":[", f);
    first = true;
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        if (in->supplies[i].type == KS_SUPPLY_BATTERY)
            continue;
        fprintf(f, "%s{\"name\":", first ? "" : ",");
        first = false;
        ks_json_str(f, in->supplies[i].name);
        fprintf(f, ",\"type\":\"%s\",", supply_type_str(in->supplies[i].type));
        json_value(f, "online", &s->supplies[i].online);
        fputc('}', f);
    }
    fputc(']', f);
}

static void
json_freq_fans(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    fputs(",\"frequency\":[", f);
    for (uint32_t i = 0; i < in->n_freq; i++) {
        const ks_telem_freq_sample *fs = &s->freq[i];

        fprintf(f, "%s{\"name\":", i ? "," : "");
        ks_json_str(f, in->freq[i].name);
        fprintf(f, ",\"kind\":\"%s\",\"class\":\"%s\",", freq_kind_str(in->freq[i].kind),
                ks_telem_class_str(in->freq[i].cls));
        json_value(f, "cur_hz", &fs->cur_hz);
        fputc(',', f);
        json_value(f, "min_hz", &fs->min_hz);
        fputc(',', f);
        json_value(f, "max_hz", &fs->max_hz);
        fputc(',', f);
        json_value(f, "load_permille", &fs->load_permille);
        fputc('}', f);
    }
    fputs("],\"fans\":[", f);
    for (uint32_t i = 0; i < in->n_fans; i++) {
        fprintf(f, "%s{\"name\":", i ? "," : "");
        ks_json_str(f, in->fans[i].name);
        fputc(',', f);
        json_value(f, "rpm", &s->fan_rpm[i]);
        fputc('}', f);
    }
    fputc(']', f);
}

static void
json_governor(FILE *f, const ks_telem_info *in, const ks_telem_sample *s, int32_t margin_mc)
{
    fputs(",\"governor\":{", f);
    json_zone_name(f, "hottest_zone", in, s->hottest_zone);
    fputc(',', f);
    json_mc(f, "hottest_mc", s->hottest_zone >= 0 && s->hottest.valid, s->hottest.temp_mc);
    fputc(',', f);
    json_zone_name(f, "passive_zone", in, s->passive_zone);
    fputc(',', f);
    json_mc(f, "passive_trip_mc", has_passive(s), s->passive_trip.temp_mc);
    fputc(',', f);
    json_mc(f, "critical_trip_mc", s->critical_trip.valid, s->critical_trip.temp_mc);
    fputc(',', f);
    json_mc(f, "default_limit_mc", has_passive(s), s->passive_trip.temp_mc - margin_mc);
    fputs(",\"headroom\":", f);
    if (has_passive(s) && s->hottest_zone >= 0 && s->hottest.valid)
        fprintf(f, "%.3f", ks_telem_headroom(s->hottest.temp_mc,
                                              s->passive_trip.temp_mc - margin_mc,
                                              KS_TELEM_HEADROOM_IDLE_MC));
    else
        fputs("null", f);
    fputs(",\"note\":", f);
    if (has_passive(s)) {
        char note[96];

        snprintf(note, sizeof note, "default limit: the passive trip minus %g degrees C",
                 margin_mc / 1000.0);
        ks_json_str(f, note);
    } else {
        ks_json_str(f, "no passive trip point: the governor stays off unless a limit is "
                       "given");
    }
    fputc('}', f);
}

void
ks_telemetry_describe_json(const ks_telemetry *t, int32_t margin_mc, FILE *f)
{
    const ks_telem_info *in = &t->info;
    const ks_telem_sample *s = &t->cur;
    const char *missing[5];
    sensor_counts c = count_readable(in, s);
    uint32_t n_missing = missing_lines(in, &c, missing);

    fputs("{\"available\":true,\"root\":", f);
    ks_json_str(f, in->root[0] ? in->root : "/");
    json_zones(f, in, s);
    json_power(f, in, s);
    json_freq_fans(f, in, s);
    fputs(",\"undervolt\":", f);
    if (in->has_undervolt && s->undervolt.valid)
        fputs(tf(s->undervolt.value != 0), f);
    else
        fputs("null", f);
    fputc(',', f);
    json_value(f, "system_power_mw", &s->system_power_mw);
    fprintf(f, ",\"system_power_source\":\"%s\"",
            s->system_power_mw.valid ? syspower_str(s->system_power_src) : "none");
    json_governor(f, in, s, margin_mc);
    fputs(",\"missing\":[", f);
    for (uint32_t i = 0; i < n_missing; i++) {
        fputs(i ? "," : "", f);
        ks_json_str(f, missing[i]);
    }
    fputs("],\"notes\":[", f);
    for (uint32_t i = 0; i < in->n_notes; i++) {
        fputs(i ? "," : "", f);
        ks_json_str(f, in->notes[i]);
    }
    fputs("]}", f);
}
