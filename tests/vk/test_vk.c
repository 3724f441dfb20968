/* Tests of the Vulkan driver layer and device discovery.
 *
 * Run as `test_vk host DATA_DIR` (no Vulkan device needed: /dev/accel
 * discovery on the fake tree, mask and preamble parsing, VkResult mapping,
 * the GLSL compiler, the cache directory's choice, the no-driver report)
 * or `test_vk vulkan DATA_DIR` (needs a Vulkan ICD, lavapipe in CI; skips
 * with 77 without one). Every Vulkan test runs with the Khronos validation
 * layer (KESTREL_VALIDATE=1) and fails on any validation message. The disk
 * cache lives in a temporary directory (KESTREL_CACHE_DIR) removed at the
 * end. */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/accel.h"
#include "driver/base.h"
#include "driver/drm.h"
#include "kestrel/devices.h"
#include "kestrel/kestrel.h"
#ifdef KS_HAVE_VULKAN
#include "driver/fault.h"
#include "driver/vk.h"
#include "driver/vk_matvec.h"
#include "runtime/qtype.h"
#endif

static const char *data_dir = ".";
static char cache_root[256];  /* vulkan mode: made by main, removed at the end */

static void
set_accel_roots(void)
{
    char sys[1024];

    snprintf(sys, sizeof sys, "%s/accel-sysfs", data_dir);
    setenv("KESTREL_SYSFS_ROOT", sys, 1);
    setenv("KESTREL_DEV_ROOT", data_dir, 1);
}

/* Captures what ks_devices_print writes. Caller frees. */
static char *
print_devices(unsigned flags, ks_status *st)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    ck_assert_ptr_nonnull(f);
    *st = ks_devices_print(f, flags);
    fclose(f);
    return buf;
}

/* ---- /dev/accel -------------------------------------------------------- */

START_TEST(accel_fake_tree)
{
    ks_accel_info a[8];
    uint32_t n = 0;

    set_accel_roots();
    ck_assert_int_eq(ks_accel_list(NULL, &n), KS_OK);
    ck_assert_uint_eq(n, 3);
    n = 8;
    ck_assert_int_eq(ks_accel_list(a, &n), KS_OK);
    ck_assert_uint_eq(n, 3);

    /* Real form: device/driver is a symlink, its basename is the driver. */
    ck_assert_uint_eq(a[0].index, 0);
    ck_assert_str_eq(a[0].driver, "intel_vpu");
    ck_assert(a[0].node_present);
    ck_assert_ptr_nonnull(strstr(a[0].node, "/dev/accel/accel0"));
    ck_assert_ptr_nonnull(strstr(a[0].reason, "Level Zero"));

    /* No driver link: DRIVER= from uevent; no node under /dev. */
    ck_assert_uint_eq(a[1].index, 1);
    ck_assert_str_eq(a[1].driver, "amdxdna");
    ck_assert(!a[1].node_present);

    /* Fake-tree shorthand: device/driver is a file holding the name. */
    ck_assert_uint_eq(a[2].index, 3);
    ck_assert_str_eq(a[2].driver, "rocket");
    ck_assert(a[2].node_present);
    ck_assert_ptr_nonnull(strstr(a[2].reason, "Teflon"));

    /* Count-then-fill with a short array fills only what fits. */
    n = 1;
    ck_assert_int_eq(ks_accel_list(a, &n), KS_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(a[0].driver, "intel_vpu");

    /* Trailing slashes on a root do not double up in paths. */
    char root[1024];
    snprintf(root, sizeof root, "%s//", data_dir);
    setenv("KESTREL_DEV_ROOT", root, 1);
    n = 1;
    ck_assert_int_eq(ks_accel_list(a, &n), KS_OK);
    ck_assert_ptr_null(strstr(a[0].node, "//dev"));
    ck_assert(a[0].node_present);
}
END_TEST

START_TEST(accel_absent_tree)
{
    uint32_t n = 99;

    setenv("KESTREL_SYSFS_ROOT", "/nonexistent-kestrel-root", 1);
    setenv("KESTREL_DEV_ROOT", "/nonexistent-kestrel-root", 1);
    ck_assert_int_eq(ks_accel_list(NULL, &n), KS_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(ks_accel_list(NULL, NULL), KS_ERR_INVALID_ARG);
    ck_assert_str_eq(ks_accel_reason("no_such_driver") ? "x" : "", "x");
}
END_TEST

/* ---- libdrm ------------------------------------------------------------- */

START_TEST(drm_match_nothing)
{
    ks_drm_key key = { 0 };
    ks_drm_node node;

    memset(&node, 0x55, sizeof node);
    ck_assert_int_eq(ks_drm_match(&key, &node), KS_OK);
    ck_assert(!node.found);
    ck_assert_str_eq(node.render_path, "");
    /* A key no device can have (render node 0:0). */
    key.has_render = true;
    ck_assert_int_eq(ks_drm_match(&key, &node), KS_OK);
    ck_assert(!node.found);
    ck_assert_int_eq(ks_drm_match(&key, NULL), KS_ERR_INVALID_ARG);
}
END_TEST

/* ---- The report --------------------------------------------------- */

START_TEST(report_without_driver)
{
    ks_status st;
    char *out;

    /* The loader reads these at every vkCreateInstance. */
    setenv("VK_ICD_FILENAMES", "/nonexistent/kestrel_icd.json", 1);
    setenv("VK_DRIVER_FILES", "/nonexistent/kestrel_icd.json", 1);
    set_accel_roots();
    out = print_devices(0, &st);
    ck_assert_int_eq(st, KS_OK);
    ck_assert_ptr_nonnull(strstr(out, "Kestrel will run on the CPU"));
    ck_assert_ptr_nonnull(strstr(out, "accel0"));
    ck_assert_ptr_nonnull(strstr(out, "intel_vpu"));
    ck_assert_ptr_nonnull(strstr(out, "no execution path"));
    free(out);

    out = print_devices(KS_DEVICES_JSON, &st);
    ck_assert_int_eq(st, KS_OK);
    ck_assert_int_eq(out[0], '{');
    ck_assert_ptr_nonnull(strstr(out, "\"cpu_only\":true"));
    ck_assert_ptr_nonnull(strstr(out, "\"driver\":\"rocket\""));
    free(out);
    ck_assert_int_eq(ks_devices_print(stdout, 0x80), KS_ERR_INVALID_ARG);
}
END_TEST

#ifdef KS_HAVE_VULKAN

/* ---- Pure helpers ---------------------------------------------------- */

START_TEST(mask_parse)
{
    ks_vk_mask m;
    char text[128];

    ck_assert_int_eq(ks_vk_mask_parse(NULL, &m), KS_OK);
    ck_assert(!m.no8bit && !m.no16bit && !m.nofp16 && !m.nointdot && m.subgroup == 0);
    ks_vk_mask_format(&m, text, sizeof text);
    ck_assert_str_eq(text, "none");

    ck_assert_int_eq(ks_vk_mask_parse(" no8bit, nofp16 ,subgroup=16,nointdot", &m), KS_OK);
    ck_assert(m.no8bit && !m.no16bit && m.nofp16 && m.nointdot);
    ck_assert_uint_eq(m.subgroup, 16);
    ks_vk_mask_format(&m, text, sizeof text);
    ck_assert_str_eq(text, "no8bit,nofp16,nointdot,subgroup=16");

    ck_assert_int_eq(ks_vk_mask_parse("no16bit,,", &m), KS_OK);
    ck_assert(m.no16bit);

    ck_assert_int_eq(ks_vk_mask_parse("no8bit,nofp32", &m), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'nofp32'"));
    ck_assert(!m.no8bit);  /* zeroed on failure */
    ck_assert_int_eq(ks_vk_mask_parse("subgroup=12", &m), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "subgroup=12"));
    ck_assert_int_eq(ks_vk_mask_parse("subgroup=", &m), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_vk_mask_parse("subgroup=512", &m), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_vk_mask_parse("subgroup=99999999999999999999", &m),
                     KS_ERR_INVALID_ARG);
}
END_TEST

START_TEST(result_mapping)
{
    ck_assert_int_eq(ks_vk_check(VK_SUCCESS, "x"), KS_OK);
    ck_assert_int_eq(ks_vk_check(VK_INCOMPLETE, "x"), KS_OK);
    ck_assert_int_eq(ks_vk_check(VK_ERROR_DEVICE_LOST, "vkQueueSubmit"), KS_ERR_DEVICE_LOST);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "vkQueueSubmit"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "VK_ERROR_DEVICE_LOST"));
    ck_assert_int_eq(ks_vk_status_of(VK_ERROR_OUT_OF_DEVICE_MEMORY), KS_ERR_DEVICE_OOM);
    ck_assert_int_eq(ks_vk_status_of(VK_ERROR_OUT_OF_HOST_MEMORY), KS_ERR_NOMEM);
    ck_assert_int_eq(ks_vk_status_of(VK_ERROR_INCOMPATIBLE_DRIVER), KS_ERR_NO_DEVICE);
    ck_assert_int_eq(ks_vk_status_of(VK_ERROR_INITIALIZATION_FAILED), KS_ERR_NO_DEVICE);
    ck_assert_int_eq(ks_vk_status_of(VK_ERROR_EXTENSION_NOT_PRESENT), KS_ERR_UNSUPPORTED);
    ck_assert_int_eq(ks_vk_status_of(VK_ERROR_UNKNOWN), KS_ERR_INTERNAL);
}
END_TEST

START_TEST(choose_order)
{
    ks_vk_device_info d[4];
    uint32_t pick = 99;

    memset(d, 0, sizeof d);
    d[0].type = KS_VK_TYPE_CPU;
    d[1].type = KS_VK_TYPE_INTEGRATED;
    d[2].type = KS_VK_TYPE_DISCRETE;
    d[3].type = KS_VK_TYPE_VIRTUAL;
    for (int i = 0; i < 4; i++)
        d[i].usable = true;
    ck_assert_int_eq(ks_vk_device_choose(d, 4, -1, &pick), KS_OK);
    ck_assert_uint_eq(pick, 2);
    d[2].usable = false;
    ck_assert_int_eq(ks_vk_device_choose(d, 4, -1, &pick), KS_OK);
    ck_assert_uint_eq(pick, 1);
    ck_assert_int_eq(ks_vk_device_choose(d, 4, 0, &pick), KS_OK);
    ck_assert_uint_eq(pick, 0);
    ck_assert_int_eq(ks_vk_device_choose(d, 4, 2, &pick), KS_ERR_UNSUPPORTED);
    ck_assert_int_eq(ks_vk_device_choose(d, 4, 7, &pick), KS_ERR_NO_DEVICE);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "device 7"));
    ck_assert_int_eq(ks_vk_device_choose(d, 0, -1, &pick), KS_ERR_NO_DEVICE);
}
END_TEST

START_TEST(preamble)
{
    const char *ok[] = { "KS_QUANT_Q4_0", "FACTOR=2.0", "_X1=a b" };
    const char *bad1[] = { "1ABC=3" };
    const char *bad2[] = { "A=1\n#error" };
    char *s = NULL;

    ck_assert_int_eq(ks_vk_preamble(ok, 3, &s), KS_OK);
    ck_assert_str_eq(s, "#define KS_QUANT_Q4_0 \n#define FACTOR 2.0\n#define _X1 a b\n");
    free(s);
    ck_assert_int_eq(ks_vk_preamble(NULL, 0, &s), KS_OK);
    ck_assert_str_eq(s, "");
    free(s);
    ck_assert_int_eq(ks_vk_preamble(bad1, 1, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "1ABC"));
    ck_assert_int_eq(ks_vk_preamble(bad2, 1, &s), KS_ERR_INVALID_ARG);
}
END_TEST

START_TEST(cache_dir_choice)
{
    char buf[256];

    unsetenv("KESTREL_NO_CACHE");
    unsetenv("KESTREL_CACHE_DIR");
    setenv("XDG_CACHE_HOME", "/xdg/cache", 1);
    setenv("HOME", "/home/kes", 1);
    ck_assert_str_eq(ks_vk_cache_dir(buf, sizeof buf), "/xdg/cache/kestrel");
    /* XDG: a relative path is ignored. */
    setenv("XDG_CACHE_HOME", "relative/cache", 1);
    ck_assert_str_eq(ks_vk_cache_dir(buf, sizeof buf), "/home/kes/.cache/kestrel");
    unsetenv("XDG_CACHE_HOME");
    ck_assert_str_eq(ks_vk_cache_dir(buf, sizeof buf), "/home/kes/.cache/kestrel");
    setenv("KESTREL_CACHE_DIR", "/tmp/kc//", 1);
    ck_assert_str_eq(ks_vk_cache_dir(buf, sizeof buf), "/tmp/kc");
    ck_assert_ptr_null(ks_vk_cache_dir(buf, 5));  /* does not fit */
    setenv("KESTREL_NO_CACHE", "0", 1);
    ck_assert_ptr_nonnull(ks_vk_cache_dir(buf, sizeof buf));
    setenv("KESTREL_NO_CACHE", "1", 1);
    ck_assert_ptr_null(ks_vk_cache_dir(buf, sizeof buf));
    unsetenv("KESTREL_NO_CACHE");
    unsetenv("KESTREL_CACHE_DIR");
    unsetenv("HOME");
    ck_assert_ptr_null(ks_vk_cache_dir(buf, sizeof buf));
}
END_TEST

static const char *scale_glsl =
    "#version 450\n"
    "layout(local_size_x_id = 0) in;\n"
    "layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };\n"
    "layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };\n"
    "layout(push_constant) uniform Args { uint n; float bias; } args;\n"
    "void main() {\n"
    "    uint i = gl_GlobalInvocationID.x;\n"
    "    if (i < args.n)\n"
    "        dst[i] = src[i] * FACTOR + args.bias;\n"
    "}\n";

#ifdef KS_HAVE_GLSLANG
START_TEST(compile_ok)
{
    const char *defs[] = { "FACTOR=2.0" };
    ks_vk_compile_params p = { .name = "scale", .defines = defs, .n_defines = 1 };
    ks_vk_spirv spv;

    ck_assert_int_eq(ks_vk_compile(scale_glsl, &p, &spv), KS_OK);
    ck_assert_uint_gt(spv.n_words, 20);
    ck_assert_uint_eq(spv.words[0], 0x07230203u);
    /* Default target is SPIR-V 1.5 (Vulkan 1.2): version word 0x00010500. */
    ck_assert_uint_eq(spv.words[1], 0x00010500u);
    ks_vk_spirv_fini(&spv);
    ck_assert_ptr_null(spv.words);

    p.vk_api_version = VK_API_VERSION_1_1;
    ck_assert_int_eq(ks_vk_compile(scale_glsl, &p, &spv), KS_OK);
    ck_assert_uint_eq(spv.words[1], 0x00010300u);
    ks_vk_spirv_fini(&spv);
}
END_TEST

START_TEST(compile_errors_carry_log)
{
    ks_vk_compile_params p = { .name = "scale" };
    ks_vk_spirv spv;
    const char *broken = "#version 450\nlayout(local_size_x = 1) in;\n"
                         "void main() { float x = undefined_thing; }\n";

    /* FACTOR undefined: glslang names it. */
    ck_assert_int_eq(ks_vk_compile(scale_glsl, &p, &spv), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(spv.words);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'scale'"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "ERROR"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "FACTOR"));

    ck_assert_int_eq(ks_vk_compile(broken, NULL, &spv), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "undefined_thing"));
}
END_TEST
#endif /* KS_HAVE_GLSLANG */

/* ---- Tests on a real Vulkan device ---------------------------------- */

static int32_t
lavapipe_index(void)
{
    ks_vk_device_info d[16];
    uint32_t n = 16;

    if (ks_vk_devices_list(d, &n) != KS_OK)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (d[i].driver_id == VK_DRIVER_ID_MESA_LLVMPIPE)
            return (int32_t)i;
    return -1;
}

/* Context on lavapipe when present (what CI has), else the default pick. */
static ks_vk_ctx *
make_ctx(void)
{
    ks_vk_ctx_params p = { 0 };
    ks_vk_ctx *ctx = NULL;
    int32_t lvp = lavapipe_index();

    if (lvp >= 0) {
        p.force_device = true;
        p.device_index = (uint32_t)lvp;
    }
    ck_assert_msg(ks_vk_ctx_create(&p, &ctx) == KS_OK, "%s", ks_last_error());
    ck_assert(ctx->validation);
    return ctx;
}

static void
done_ctx(ks_vk_ctx *ctx)
{
    ck_assert_uint_eq(ks_vk_ctx_validation_count(ctx), 0);
    ks_vk_ctx_destroy(ctx);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}

static bool
lavapipe_installed(void)
{
    glob_t g;
    bool found = glob("/usr/share/vulkan/icd.d/lvp_icd.*.json", 0, NULL, &g) == 0;

    if (found)
        globfree(&g);
    return found && !getenv("VK_ICD_FILENAMES") && !getenv("VK_DRIVER_FILES");
}

START_TEST(enumerate)
{
    ks_vk_device_info d[16];
    uint32_t n = 0, pick = 99;
    bool saw_lavapipe = false;

    ck_assert_int_eq(ks_vk_devices_list(NULL, &n), KS_OK);
    ck_assert_uint_ge(n, 1);
    n = 16;
    ck_assert_int_eq(ks_vk_devices_list(d, &n), KS_OK);
    for (uint32_t i = 0; i < n; i++) {
        ck_assert_uint_eq(d[i].index, i);
        ck_assert_uint_gt(strlen(d[i].name), 0);
        ck_assert_uint_ge(d[i].n_heaps, 1);
        ck_assert_uint_gt(d[i].heaps[0].size_bytes, 0);
        if (d[i].driver_id != VK_DRIVER_ID_MESA_LLVMPIPE)
            continue;
        /* lavapipe: a CPU-type device named llvmpipe (reference facts). */
        saw_lavapipe = true;
        ck_assert_int_eq(d[i].type, KS_VK_TYPE_CPU);
        ck_assert_str_eq(d[i].driver_name, "llvmpipe");
        ck_assert_ptr_nonnull(strstr(d[i].name, "llvmpipe"));
        ck_assert(d[i].usable);
        ck_assert_uint_ge(d[i].n_queue_families, 1);
        ck_assert(d[i].queue_families[0].flags & VK_QUEUE_COMPUTE_BIT);
        ck_assert_uint_ge(d[i].subgroup_size, 4);
        ck_assert_uint_ge(d[i].max_storage_buffer_range, 1u << 20);
        ck_assert_uint_ge(d[i].max_shared_bytes, 16384);
        ck_assert(d[i].storage_16bit);
        ck_assert(!d[i].drm.found);  /* no DRM node for a CPU device */
    }
    if (lavapipe_installed())
        ck_assert_msg(saw_lavapipe, "lavapipe's ICD is installed but llvmpipe was not listed");
    ck_assert_int_eq(ks_vk_device_choose(d, n, -1, &pick), KS_OK);
    ck_assert_uint_lt(pick, n);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}
END_TEST

START_TEST(context_and_mask)
{
    ks_vk_ctx *ctx;

    setenv("KESTREL_VK_MASK", "nofp16,no8bit,subgroup=4", 1);
    ctx = make_ctx();
    ck_assert_ptr_nonnull(ctx->device);
    ck_assert_ptr_nonnull(ctx->queue);
    ck_assert(ctx->mask.nofp16 && ctx->mask.no8bit && !ctx->mask.no16bit);
    ck_assert(!ctx->caps.float16 && !ctx->caps.storage_8bit && !ctx->caps.int8);
    ck_assert(ctx->caps.storage_16bit == ctx->info.storage_16bit);
    ck_assert_uint_eq(ctx->caps.subgroup_size, 4);
    ck_assert(ctx->api_version >= VK_API_VERSION_1_1);
    /* The queue family we use can compute. */
    bool found = false;
    for (uint32_t i = 0; i < ctx->info.n_queue_families; i++)
        found |= ctx->info.queue_families[i].family == ctx->queue_family;
    ck_assert(found);
    done_ctx(ctx);

    setenv("KESTREL_VK_MASK", "no9bit", 1);
    ck_assert_int_eq(ks_vk_ctx_create(NULL, &ctx), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(ctx);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "no9bit"));
    unsetenv("KESTREL_VK_MASK");

    ks_vk_ctx_params p = { .force_device = true, .device_index = 1000 };
    ck_assert_int_eq(ks_vk_ctx_create(&p, &ctx), KS_ERR_NO_DEVICE);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}
END_TEST

START_TEST(upload_readback)
{
    ks_vk_ctx *ctx = make_ctx();
    const uint64_t size = (10u << 20) + 12;  /* three staging chunks */
    uint8_t *src = malloc(size), *back = malloc(size);
    ks_vk_buffer b, host;

    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(back);
    for (uint64_t i = 0; i < size; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "weights", size, KS_VK_MEM_DEVICE, &b), KS_OK);
    ck_assert_ptr_null(b.map);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &b, 0, src, size), KS_OK);
    memset(back, 0, size);
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &b, 0, back, size), KS_OK);
    ck_assert(memcmp(src, back, size) == 0);

    /* A patch at an odd offset across a chunk boundary. */
    static const char patch[] = "kestrel writes here, across a staging boundary";
    const uint64_t off = (4u << 20) - 7;
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &b, off, patch, sizeof patch), KS_OK);
    char got[sizeof patch];
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &b, off, got, sizeof got), KS_OK);
    ck_assert_str_eq(got, patch);
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &b, off - 16, back, 16), KS_OK);
    ck_assert(memcmp(back, src + off - 16, 16) == 0);

    /* Out of range is refused with the buffer's name. */
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &b, size - 4, src, 8), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'weights'"));
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "empty", 0, KS_VK_MEM_DEVICE, &host),
                     KS_ERR_INVALID_ARG);

    /* Host-visible buffers are mapped and copied directly. */
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "host", 4096, KS_VK_MEM_READBACK, &host), KS_OK);
    ck_assert_ptr_nonnull(host.map);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &host, 100, src, 1000), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &host, 100, back, 1000), KS_OK);
    ck_assert(memcmp(src, back, 1000) == 0);

    ks_vk_buffer_fini(ctx, &host);
    ks_vk_buffer_fini(ctx, &b);
    ck_assert_uint_eq(ctx->device_bytes, 0);
    ks_vk_buffer_fini(ctx, &b);  /* zeroed: no-op */
    free(src);
    free(back);
    done_ctx(ctx);
}
END_TEST

#ifdef KS_HAVE_GLSLANG
typedef struct scale_args {
    uint32_t n;
    float    bias;
} scale_args;

/* Compiles scale_glsl with FACTOR=|factor|, runs it on n floats with
 * workgroups of |wg| and checks every output. */
static void
run_scale_sg(ks_vk_ctx *ctx, const char *factor_def, float factor, uint32_t n, uint32_t wg,
             uint32_t subgroup)
{
    const char *defs[] = { factor_def };
    ks_vk_compile_params cp = { .name = "scale", .defines = defs, .n_defines = 1,
                                .vk_api_version = ctx->api_version };
    ks_vk_spirv spv;
    ks_vk_pipeline *pl = NULL;
    ks_vk_buffer in, out;
    VkDescriptorSet set, unused;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    scale_args args = { .n = n, .bias = 0.5f };

    ck_assert_msg(ks_vk_compile(scale_glsl, &cp, &spv) == KS_OK, "%s", ks_last_error());
    ks_vk_pipeline_params pp = {
        .name = "scale", .spirv = spv.words, .n_words = spv.n_words, .n_buffers = 2,
        .push_bytes = sizeof args, .spec = &wg, .n_spec = 1,
        .required_subgroup_size = subgroup,
    };
    ck_assert_msg(ks_vk_pipeline_create(ctx, &pp, &pl) == KS_OK, "%s", ks_last_error());
    ks_vk_spirv_fini(&spv);

    for (uint32_t i = 0; i < n; i++)
        x[i] = (float)i - 500.0f;  /* small integers: every result is exact */
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "x", n * sizeof(float), KS_VK_MEM_DEVICE, &in),
                     KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "y", n * sizeof(float), KS_VK_MEM_DEVICE, &out),
                     KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &in, 0, x, n * sizeof(float)), KS_OK);
    const ks_vk_buffer *bufs[2] = { &in, &out };
    ck_assert_int_eq(ks_vk_pipeline_set(ctx, pl, bufs, 2, &set), KS_OK);
    ck_assert_int_eq(ks_vk_pipeline_set(ctx, pl, bufs, 1, &unused), KS_ERR_INVALID_ARG);
    ck_assert_msg(ks_vk_dispatch(ctx, pl, set, &args, (n + wg - 1) / wg, 1, 1) == KS_OK,
                  "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &out, 0, y, n * sizeof(float)), KS_OK);
    for (uint32_t i = 0; i < n; i++)
        ck_assert_msg(y[i] == x[i] * factor + 0.5f, "y[%u] = %g, expected %g", i,
                      (double)y[i], (double)(x[i] * factor + 0.5f));
    ck_assert_int_eq(ks_vk_dispatch(ctx, pl, set, &args, 0, 1, 1), KS_ERR_INVALID_ARG);

    ks_vk_buffer_fini(ctx, &in);
    ks_vk_buffer_fini(ctx, &out);
    ks_vk_pipeline_destroy(ctx, pl);
    free(x);
    free(y);
}

static void
run_scale(ks_vk_ctx *ctx, const char *factor_def, float factor, uint32_t n, uint32_t wg)
{
    run_scale_sg(ctx, factor_def, factor, n, wg, 0);
}

START_TEST(compile_and_dispatch)
{
    ks_vk_ctx *ctx = make_ctx();

    run_scale(ctx, "FACTOR=2.0", 2.0f, 1001, 64);
    run_scale(ctx, "FACTOR=3.0", 3.0f, 4096, 32);
    run_scale(ctx, "FACTOR=2.0", 2.0f, 1, 8);
    if (ctx->caps.subgroup_size_control)
        run_scale_sg(ctx, "FACTOR=3.0", 3.0f, 777, 64, ctx->info.subgroup_max);

    /* A subgroup size the device cannot run is refused up front. */
    uint32_t words[5] = { 0x07230203u, 0x00010500u, 0, 1, 0 };
    ks_vk_pipeline_params pp = { .name = "sg", .spirv = words, .n_words = 5,
                                 .required_subgroup_size = 1024 };
    ks_vk_pipeline *pl = NULL;
    ck_assert_int_eq(ks_vk_pipeline_create(ctx, &pp, &pl), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_null(pl);
    words[0] = 0xdeadbeef;
    pp.required_subgroup_size = 0;
    ck_assert_int_eq(ks_vk_pipeline_create(ctx, &pp, &pl), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "not SPIR-V"));
    done_ctx(ctx);
}
END_TEST

START_TEST(pipeline_cache_file)
{
    char path[256];
    ks_vk_ctx *ctx;
    FILE *f;
    uint32_t head[4];
    long size;

    snprintf(path, sizeof path, "/tmp/kestrel-test-vk-%ld.pcache", (long)getpid());
    remove(path);
    /* Contexts without the disk cache start with no pipeline cache. */
    setenv("KESTREL_NO_CACHE", "1", 1);

    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_pipeline_cache_save(ctx, path), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_vk_pipeline_cache_load(ctx, path), KS_OK);  /* absent: empty */
    ck_assert_ptr_nonnull(ctx->pipeline_cache);
    run_scale(ctx, "FACTOR=2.0", 2.0f, 333, 64);
    ck_assert_msg(ks_vk_pipeline_cache_save(ctx, path) == KS_OK, "%s", ks_last_error());
    uint8_t uuid[VK_UUID_SIZE];
    memcpy(uuid, ctx->info.pipeline_cache_uuid, VK_UUID_SIZE);
    uint32_t vendor = ctx->info.vendor_id;
    done_ctx(ctx);

    /* VkPipelineCacheHeaderVersionOne. */
    f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(head, sizeof head, 1, f), 1);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    ck_assert_int_ge(size, 32);
    ck_assert_uint_eq(head[0], 32);
    ck_assert_uint_eq(head[1], VK_PIPELINE_CACHE_HEADER_VERSION_ONE);
    ck_assert_uint_eq(head[2], vendor);

    /* A second start loads it and still builds working pipelines. */
    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_pipeline_cache_load(ctx, path), KS_OK);
    run_scale(ctx, "FACTOR=2.0", 2.0f, 333, 64);
    /* Loading again merges. */
    ck_assert_int_eq(ks_vk_pipeline_cache_load(ctx, path), KS_OK);
    done_ctx(ctx);

    /* A corrupt or foreign cache is ignored, not fatal. */
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("this is not a pipeline cache at all, just some text", f);
    fclose(f);
    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_pipeline_cache_load(ctx, path), KS_OK);
    run_scale(ctx, "FACTOR=3.0", 3.0f, 100, 16);
    done_ctx(ctx);
    remove(path);
}
END_TEST

/* ---- Disk cache (vk_cache.c) ------------------------------------------- */

/* A fresh cache directory <cache_root>/<name> for this test, made the
 * context's through KESTREL_CACHE_DIR. */
static void
use_cache_dir(const char *name, char *dir, size_t size)
{
    snprintf(dir, size, "%s/%s", cache_root, name);
    setenv("KESTREL_CACHE_DIR", dir, 1);
    unsetenv("KESTREL_NO_CACHE");
}

/* Number of *.spv files under <dir>/spirv; the last one's path in |last|. */
static size_t
spv_files(const char *dir, char *last, size_t size)
{
    char pat[512];
    glob_t g;
    size_t n = 0;

    snprintf(pat, sizeof pat, "%s/spirv/*.spv", dir);
    if (glob(pat, 0, NULL, &g) == 0) {
        n = g.gl_pathc;
        if (last)
            snprintf(last, size, "%s", g.gl_pathv[n - 1]);
        globfree(&g);
    }
    return n;
}

static long
file_size(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void
flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    int c;

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, at, SEEK_SET), 0);
    c = fgetc(f);
    ck_assert_int_ne(c, EOF);
    ck_assert_int_eq(fseek(f, at, SEEK_SET), 0);
    fputc(c ^ 0x40, f);
    ck_assert_int_eq(fclose(f), 0);
}

static void
copy_file(const char *from, const char *to)
{
    char buf[1 << 16];
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    size_t n;

    ck_assert(in && out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

/* Runs one ks_vk_shader_get with stderr going to a file and returns what
 * it logged (malloc'd). */
static char *
get_logged(ks_vk_ctx *ctx, const ks_vk_compile_params *p, ks_vk_spirv *out)
{
    char log_path[300];
    int fd, saved;
    FILE *f;
    char *text = calloc(1, 8192);

    snprintf(log_path, sizeof log_path, "%s/log.txt", cache_root);
    fflush(stderr);
    saved = dup(2);
    fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved >= 0 && fd >= 0 && text);
    dup2(fd, 2);
    close(fd);
    ks_status st = ks_vk_shader_get(ctx, "matvec.comp", p, out);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ck_assert_msg(st == KS_OK, "%s", ks_last_error());
    f = fopen(log_path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, 8191, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

static double
ms_since(uint64_t t0)
{
    return (double)(ks_now_ns() - t0) / 1e6;
}

START_TEST(shader_cache)
{
    const char *defs_a[] = { "KS_QUANT_Q4_0" };
    const char *defs_b[] = { "KS_QUANT_Q4_0", "KS_EPI_BIAS" };
    const char *defs_c[] = { "KS_EPI_BIAS", "KS_QUANT_Q4_0" };
    ks_vk_compile_params pa = { .name = "a", .defines = defs_a, .n_defines = 1 };
    ks_vk_compile_params pb = { .name = "b", .defines = defs_b, .n_defines = 2 };
    ks_vk_compile_params pc = { .name = "c", .defines = defs_c, .n_defines = 2 };
    char dir[300], file_a[600], file_b[600], got[300];
    ks_vk_spirv first, s;
    ks_vk_ctx *ctx;
    uint64_t t0;
    double compile_ms, hit_ms;
    char *log;

    use_cache_dir("shader", dir, sizeof dir);
    ks_log_set_level(KS_LOG_WARN);
    ctx = make_ctx();
    ck_assert_ptr_nonnull(ctx->cache_dir);
    ck_assert_str_eq(ctx->cache_dir, dir);
    ck_assert_str_eq(ks_vk_cache_dir(got, sizeof got), dir);
    ck_assert_ptr_nonnull(ctx->pipeline_cache);

    /* First start: compiled and written. */
    t0 = ks_now_ns();
    ck_assert_msg(ks_vk_shader_get(ctx, "matvec.comp", &pa, &first) == KS_OK, "%s",
                  ks_last_error());
    compile_ms = ms_since(t0);
    ck_assert_uint_eq(ctx->n_shader_compiled, 1);
    ck_assert_uint_eq(ctx->n_shader_hits, 0);
    ck_assert_uint_gt(first.n_words, 100);
    ck_assert_uint_eq(first.words[0], 0x07230203u);
    ck_assert_uint_eq(spv_files(dir, file_a, sizeof file_a), 1);
    ck_assert_int_eq(file_size(file_a), 40 + 4 * (long)first.n_words);
    done_ctx(ctx);
    /* The pipeline cache was saved when the context went. */
    char pat[400];
    glob_t g;
    snprintf(pat, sizeof pat, "%s/pipelines-*.bin", dir);
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1);
    ck_assert_int_ge(file_size(g.gl_pathv[0]), 32);
    globfree(&g);

    /* Second start: a hit, the same words, nothing compiled. */
    ctx = make_ctx();
    t0 = ks_now_ns();
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &pa, &s), KS_OK);
    hit_ms = ms_since(t0);
    ck_assert_uint_eq(ctx->n_shader_hits, 1);
    ck_assert_uint_eq(ctx->n_shader_compiled, 0);
    ck_assert_uint_eq(s.n_words, first.n_words);
    ck_assert(memcmp(s.words, first.words, 4 * s.n_words) == 0);
    ks_vk_spirv_fini(&s);
    printf("matvec.comp Q4_0: compiled in %.1f ms, read from the cache in %.2f ms\n",
           compile_ms, hit_ms);

    /* A flipped byte in the words, in the header's magic, version and key, a
     * file cut short, one shorter than the header: each rebuilt with a
     * warning naming the file, and valid again afterwards. */
    const long at[] = { 40 + 4 * 50, 0, 4, 8, -1, -2 };
    for (unsigned i = 0; i < sizeof at / sizeof at[0]; i++) {
        if (at[i] >= 0)
            flip_byte(file_a, at[i]);
        else
            ck_assert_int_eq(truncate(file_a, at[i] == -1 ? file_size(file_a) / 2 : 10), 0);
        uint32_t compiled = ctx->n_shader_compiled, hits = ctx->n_shader_hits;
        log = get_logged(ctx, &pa, &s);
        ck_assert_uint_eq(ctx->n_shader_compiled, compiled + 1);
        ck_assert_uint_eq(ctx->n_shader_rebuilt, i + 1);
        ck_assert_uint_eq(ctx->n_shader_hits, hits);
        ck_assert_msg(strstr(log, file_a) && strstr(log, "corrupt or stale") &&
                      strstr(log, "rebuilt"), "case %u logged: %s", i, log);
        free(log);
        ck_assert(s.n_words == first.n_words &&
                  memcmp(s.words, first.words, 4 * s.n_words) == 0);
        ks_vk_spirv_fini(&s);
        ck_assert_int_eq(file_size(file_a), 40 + 4 * (long)first.n_words);
        ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &pa, &s), KS_OK);
        ck_assert_uint_eq(ctx->n_shader_hits, hits + 1);
        ks_vk_spirv_fini(&s);
    }

    /* Other defines, or the same in another order: other files. */
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &pb, &s), KS_OK);
    ks_vk_spirv_fini(&s);
    ck_assert_uint_eq(spv_files(dir, NULL, 0), 2);
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &pc, &s), KS_OK);
    ks_vk_spirv_fini(&s);
    ck_assert_uint_eq(spv_files(dir, NULL, 0), 3);
    ck_assert_uint_eq(ctx->n_shader_compiled, 6 + 2);

    /* A whole, valid file under another key's name is stale. */
    snprintf(pat, sizeof pat, "%s/spirv/*.spv", dir);
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (strcmp(g.gl_pathv[i], file_a) != 0)
            snprintf(file_b, sizeof file_b, "%s", g.gl_pathv[i]);
    globfree(&g);
    copy_file(file_b, file_a);
    log = get_logged(ctx, &pa, &s);
    ck_assert_ptr_nonnull(strstr(log, "key"));
    free(log);
    ck_assert(s.n_words == first.n_words && memcmp(s.words, first.words, 4 * s.n_words) == 0);
    ks_vk_spirv_fini(&s);
    ck_assert_uint_eq(ctx->n_shader_rebuilt, 7);

    /* Errors: no such template; a variant that does not compile writes
     * nothing. */
    ck_assert_int_eq(ks_vk_shader_get(ctx, "nothing.comp", &pa, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "nothing.comp"));
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", NULL, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(s.words);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "KS_QUANT"));
    ck_assert_uint_eq(spv_files(dir, NULL, 0), 3);
    ks_vk_spirv_fini(&first);
    done_ctx(ctx);
}
END_TEST

/* The 128-bit key a .spv file is named after. */
static void
key_of_name(const char *path, uint64_t key[2])
{
    const char *base = strrchr(path, '/') + 1;
    char half[17];

    ck_assert_uint_eq(strlen(base), 32 + 4);
    for (int i = 0; i < 2; i++) {
        memcpy(half, base + 16 * i, 16);
        half[16] = '\0';
        key[i] = strtoull(half, NULL, 16);
    }
}

/* Another variant's valid file copied over this one's name, its header's
 * key rewritten to the name's: the checksum covers the key, so it is
 * rebuilt, never served as this variant's code. */
START_TEST(swapped_entry_rebuilt)
{
    const char *defs_a[] = { "KS_QUANT_Q4_0" };
    const char *defs_b[] = { "KS_QUANT_Q8_0" };
    ks_vk_compile_params pa = { .name = "a", .defines = defs_a, .n_defines = 1 };
    ks_vk_compile_params pb = { .name = "b", .defines = defs_b, .n_defines = 1 };
    char dir[300], file_a[600], file_b[600];
    ks_vk_spirv a, b, s;
    uint64_t key_a[2];
    ks_vk_ctx *ctx;
    FILE *f;
    char *log;

    use_cache_dir("swapped", dir, sizeof dir);
    ks_log_set_level(KS_LOG_WARN);
    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &pa, &a), KS_OK);
    ck_assert_uint_eq(spv_files(dir, file_a, sizeof file_a), 1);
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &pb, &b), KS_OK);
    ck_assert_uint_eq(spv_files(dir, NULL, 0), 2);
    ck_assert(a.n_words != b.n_words || memcmp(a.words, b.words, 4 * a.n_words) != 0);
    {
        char pat[400];
        glob_t g;

        snprintf(pat, sizeof pat, "%s/spirv/*.spv", dir);
        ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
        for (size_t i = 0; i < g.gl_pathc; i++)
            if (strcmp(g.gl_pathv[i], file_a) != 0)
                snprintf(file_b, sizeof file_b, "%s", g.gl_pathv[i]);
        globfree(&g);
    }
    copy_file(file_b, file_a);
    key_of_name(file_a, key_a);
    f = fopen(file_a, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 8, SEEK_SET), 0);  /* spv_header.key */
    ck_assert_uint_eq(fwrite(key_a, sizeof key_a, 1, f), 1);
    ck_assert_int_eq(fclose(f), 0);

    uint32_t rebuilt = ctx->n_shader_rebuilt;
    log = get_logged(ctx, &pa, &s);
    ck_assert_msg(strstr(log, file_a) && strstr(log, "checksum"), "logged: %s", log);
    free(log);
    ck_assert_uint_eq(ctx->n_shader_rebuilt, rebuilt + 1);
    ck_assert(s.n_words == a.n_words && memcmp(s.words, a.words, 4 * s.n_words) == 0);
    ks_vk_spirv_fini(&s);
    ks_vk_spirv_fini(&a);
    ks_vk_spirv_fini(&b);
    done_ctx(ctx);
}
END_TEST

/* FIFOs (nobody writing) at a .spv entry's name and at the pipeline
 * cache's: neither blocks; the entry is "not a regular file, ignored" and
 * compiled, and both are replaced by regular files. A hang is a failure
 * through the tcase timeout. */
START_TEST(fifo_entries_ignored)
{
    const char *defs[] = { "KS_QUANT_Q5_0" };
    ks_vk_compile_params p = { .name = "fifo", .defines = defs, .n_defines = 1 };
    char dir[300], file[600], pat[400];
    struct stat sb;
    ks_vk_spirv s;
    ks_vk_ctx *ctx;
    glob_t g;
    char *log;

    use_cache_dir("fifo", dir, sizeof dir);
    ks_log_set_level(KS_LOG_WARN);
    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &p, &s), KS_OK);
    ks_vk_spirv_fini(&s);
    done_ctx(ctx);
    ck_assert_uint_eq(spv_files(dir, file, sizeof file), 1);
    snprintf(pat, sizeof pat, "%s/pipelines-*.bin", dir);
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1);
    ck_assert_int_eq(remove(file), 0);
    ck_assert_int_eq(mkfifo(file, 0644), 0);
    ck_assert_int_eq(remove(g.gl_pathv[0]), 0);
    ck_assert_int_eq(mkfifo(g.gl_pathv[0], 0644), 0);

    ctx = make_ctx();  /* loads the pipeline cache: must not block */
    ck_assert_ptr_nonnull(ctx->pipeline_cache);
    log = get_logged(ctx, &p, &s);
    ck_assert_msg(strstr(log, file) && strstr(log, "not a regular file, ignored"),
                  "logged: %s", log);
    free(log);
    ck_assert_uint_eq(ctx->n_shader_hits, 0);
    ck_assert_uint_eq(ctx->n_shader_compiled, 1);
    ck_assert_uint_eq(s.words[0], 0x07230203u);
    ks_vk_spirv_fini(&s);
    done_ctx(ctx);
    ck_assert_int_eq(stat(file, &sb), 0);
    ck_assert(S_ISREG(sb.st_mode));
    ck_assert_int_eq(stat(g.gl_pathv[0], &sb), 0);
    ck_assert(S_ISREG(sb.st_mode));
    globfree(&g);

    /* And the replaced entry is a hit again. */
    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &p, &s), KS_OK);
    ck_assert_uint_eq(ctx->n_shader_hits, 1);
    ks_vk_spirv_fini(&s);
    done_ctx(ctx);
}
END_TEST

/* A pipeline the driver rejects (KESTREL_FAULT=vk_pipeline_unknown, a
 * VK_ERROR_UNKNOWN at vkCreateComputePipelines) from a cached entry: the
 * entry is deleted and compiled from source once; when that fails too the
 * error names the file. */
START_TEST(rejected_entry_rebuilt_once)
{
    char dir[300], file[600];
    ks_vk_matvec *mv;
    ks_vk_ctx *ctx;

    use_cache_dir("rejected", dir, sizeof dir);
    ks_log_set_level(KS_LOG_ERROR);
    unsetenv("KESTREL_FAULT");
    ks_fault_reset();
    ctx = make_ctx();
    ck_assert_msg(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &mv) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_uint_eq(ctx->n_shader_compiled, 1);
    done_ctx(ctx);
    ck_assert_uint_eq(spv_files(dir, file, sizeof file), 1);

    /* Rejected once: rebuilt and made. */
    setenv("KESTREL_FAULT", "vk_pipeline_unknown@1", 1);
    ks_fault_reset();
    ctx = make_ctx();
    ck_assert_msg(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &mv) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_uint_eq(ctx->n_shader_hits, 1);
    ck_assert_uint_eq(ctx->n_shader_compiled, 1);
    ck_assert_uint_eq(ctx->n_shader_rebuilt, 1);
    ck_assert_ptr_nonnull(ctx->pipeline_cache);
    done_ctx(ctx);
    ck_assert_int_ge(file_size(file), 40);

    /* Rejected every time: one retry, then an error naming the file. */
    setenv("KESTREL_FAULT", "vk_pipeline_unknown@1+", 1);
    ks_fault_reset();
    ctx = make_ctx();
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &mv),
                     KS_ERR_INTERNAL);
    ck_assert_msg(strstr(ks_last_error(), file) &&
                  strstr(ks_last_error(), "VK_ERROR_UNKNOWN"), "%s", ks_last_error());
    ck_assert_uint_eq(ctx->n_shader_hits, 1);
    ck_assert_uint_eq(ctx->n_shader_compiled, 1);
    done_ctx(ctx);
    unsetenv("KESTREL_FAULT");
    ks_fault_reset();
    ks_log_set_level(KS_LOG_WARN);
}
END_TEST

/* Deferred pipelines (ks_vk_pipelines_defer/finish, the warm start's
 * thread pool): shells until finish, built after it; a build the driver
 * rejects is rebuilt from source at finish as an immediate one is, and a
 * second rejection is the error, naming the file. */
START_TEST(deferred_pipelines)
{
    static const uint32_t types[3] = { KS_QUANT_Q4_0, KS_QUANT_Q8_0, KS_QUANT_Q4_1 };
    char dir[300], file[600];
    ks_vk_matvec *mv[3];
    ks_vk_ctx *ctx;

    use_cache_dir("deferred", dir, sizeof dir);
    ks_log_set_level(KS_LOG_ERROR);
    unsetenv("KESTREL_FAULT");
    ks_fault_reset();
    ctx = make_ctx();
    ks_vk_pipelines_defer(ctx);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(ks_vk_matvec_pipeline_get(ctx, types[i], 0, &mv[i]) == KS_OK, "%s",
                      ks_last_error());
        ck_assert_ptr_nonnull(mv[i]->pl->layout);
        ck_assert(mv[i]->pl->pipeline == VK_NULL_HANDLE);
    }
    ck_assert_uint_eq(ctx->n_deferred, 3);
    ck_assert_msg(ks_vk_pipelines_finish(ctx, 2) == KS_OK, "%s", ks_last_error());
    for (int i = 0; i < 3; i++)
        ck_assert(mv[i]->pl->pipeline != VK_NULL_HANDLE);
    ck_assert_uint_eq(ctx->n_deferred, 0);
    ck_assert(!ctx->defer);
    done_ctx(ctx);

    /* the first build rejected: rebuilt at finish */
    setenv("KESTREL_FAULT", "vk_pipeline_unknown@1", 1);
    ks_fault_reset();
    ctx = make_ctx();
    ks_vk_pipelines_defer(ctx);
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &mv[0]), KS_OK);
    ck_assert_msg(ks_vk_pipelines_finish(ctx, 2) == KS_OK, "%s", ks_last_error());
    ck_assert(mv[0]->pl->pipeline != VK_NULL_HANDLE);
    ck_assert_uint_eq(ctx->n_shader_rebuilt, 1);
    done_ctx(ctx);

    /* every build rejected: the error names the entry */
    setenv("KESTREL_FAULT", "vk_pipeline_unknown@1+", 1);
    ks_fault_reset();
    ctx = make_ctx();
    ks_vk_pipelines_defer(ctx);
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &mv[0]), KS_OK);
    ck_assert_uint_eq(spv_files(dir, file, sizeof file), 3);
    ck_assert_int_eq(ks_vk_pipelines_finish(ctx, 2), KS_ERR_INTERNAL);
    ck_assert_msg(strstr(ks_last_error(), "VK_ERROR_UNKNOWN") &&
                  strstr(ks_last_error(), "rebuilt from source"), "%s", ks_last_error());
    done_ctx(ctx);
    unsetenv("KESTREL_FAULT");
    ks_fault_reset();
    ks_log_set_level(KS_LOG_WARN);
}
END_TEST

/* costs.tsv (the auto backend's layer costs) as a FIFO: creating a session
 * measures instead of blocking on it, and never appends to it. Needs
 * stories260K from KESTREL_SHARED_DIR; a hang fails through the timeout. */
START_TEST(costs_fifo_ignored)
{
    const char *shared = getenv("KESTREL_SHARED_DIR");
    char model[1024], dir[300], fifo[400];
    ks_runtime_params rp = { .backend = KS_BACKEND_AUTO, .n_threads = 2 };
    ks_session_params sp = { .n_ctx = 64 };
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    ks_session *sess = NULL;
    int32_t lvp = lavapipe_index();
    struct stat sb;

    snprintf(model, sizeof model, "%s/models/stories260K/stories260K-f32.gguf",
             shared ? shared : ".");
    if (!shared || access(model, R_OK) != 0 || lvp < 0) {
        printf("skip costs_fifo_ignored: %s\n", lvp < 0 ? "no lavapipe" : "no stories260K "
               "under $KESTREL_SHARED_DIR/models");
        return;
    }
    use_cache_dir("costs", dir, sizeof dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    snprintf(fifo, sizeof fifo, "%s/costs.tsv", dir);
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    rp.device = lvp + 1;  /* named: auto then weighs lavapipe against the CPU */
    ks_log_set_level(KS_LOG_ERROR);
    ck_assert_msg(ks_runtime_create(&rp, &rt) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_model_load(rt, model, NULL, &m) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_session_create(m, &sp, &sess) == KS_OK, "%s", ks_last_error());
    ks_session_destroy(sess);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
    ks_log_set_level(KS_LOG_WARN);
    ck_assert_int_eq(stat(fifo, &sb), 0);
    ck_assert(S_ISFIFO(sb.st_mode));
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}
END_TEST

START_TEST(cache_off_and_unwritable)
{
    const char *defs[] = { "KS_QUANT_Q8_0" };
    ks_vk_compile_params p = { .defines = defs, .n_defines = 1 };
    char dir[300], blocker[300], got[64];
    ks_vk_spirv s;
    ks_vk_ctx *ctx;
    FILE *f;

    /* KESTREL_NO_CACHE: nothing read or written, no pipeline cache. */
    use_cache_dir("off", dir, sizeof dir);
    setenv("KESTREL_NO_CACHE", "1", 1);
    ck_assert_ptr_null(ks_vk_cache_dir(got, sizeof got));
    ctx = make_ctx();
    ck_assert_ptr_null(ctx->cache_dir);
    ck_assert_ptr_null(ctx->pipeline_cache);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &p, &s), KS_OK);
        ks_vk_spirv_fini(&s);
    }
    ck_assert_uint_eq(ctx->n_shader_compiled, 2);
    ck_assert_uint_eq(ctx->n_shader_hits, 0);
    ck_assert_int_eq(ks_vk_cache_save(ctx), KS_OK);
    done_ctx(ctx);
    ck_assert_int_eq(file_size(dir), -1);  /* never made */

    /* A directory that cannot be made (a file is in the way): works, compiles
     * every time, and says so in the log; saving on demand names the path. */
    snprintf(blocker, sizeof blocker, "%s/blocker", cache_root);
    f = fopen(blocker, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(dir, sizeof dir, "%s/blocker/cache", cache_root);
    setenv("KESTREL_CACHE_DIR", dir, 1);
    unsetenv("KESTREL_NO_CACHE");
    ctx = make_ctx();
    ck_assert_ptr_nonnull(ctx->cache_dir);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(ks_vk_shader_get(ctx, "matvec.comp", &p, &s), KS_OK);
        ks_vk_spirv_fini(&s);
    }
    ck_assert_uint_eq(ctx->n_shader_compiled, 2);
    ck_assert(ctx->cache_warned);
    ck_assert_int_eq(ks_vk_cache_save(ctx), KS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), dir));
    done_ctx(ctx);
}
END_TEST

/* ks_vk_cache_save on demand; the next context loads what it wrote. */
START_TEST(pipeline_cache_on_demand)
{
    char dir[300], pat[400];
    glob_t g;
    ks_vk_ctx *ctx;

    use_cache_dir("pipelines", dir, sizeof dir);
    ctx = make_ctx();
    run_scale(ctx, "FACTOR=2.0", 2.0f, 100, 32);
    ck_assert_msg(ks_vk_cache_save(ctx) == KS_OK, "%s", ks_last_error());
    snprintf(pat, sizeof pat, "%s/pipelines-*.bin", dir);
    ck_assert_int_eq(glob(pat, 0, NULL, &g), 0);
    ck_assert_uint_eq(g.gl_pathc, 1);
    FILE *f = fopen(g.gl_pathv[0], "rb");
    uint32_t head[4];
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(head, sizeof head, 1, f), 1);
    fclose(f);
    ck_assert_uint_eq(head[1], VK_PIPELINE_CACHE_HEADER_VERSION_ONE);
    ck_assert_uint_eq(head[2], ctx->info.vendor_id);
    globfree(&g);
    done_ctx(ctx);

    ctx = make_ctx();
    ck_assert_ptr_nonnull(ctx->pipeline_cache);
    run_scale(ctx, "FACTOR=2.0", 2.0f, 100, 32);
    done_ctx(ctx);
}
END_TEST
#endif /* KS_HAVE_GLSLANG */

START_TEST(simulated_budget)
{
    ks_vk_ctx *ctx;
    ks_vk_buffer a, b, c;

    setenv("KESTREL_VK_BUDGET_MB", "1", 1);
    ctx = make_ctx();
    ck_assert_uint_eq(ctx->budget_bytes, 1u << 20);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "kv_cache", 2u << 20, KS_VK_MEM_DEVICE, &a),
                     KS_ERR_DEVICE_OOM);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'kv_cache'"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "KESTREL_VK_BUDGET_MB"));
    ck_assert_ptr_null(a.buffer);

    ck_assert_int_eq(ks_vk_buffer_init(ctx, "small", 512u << 10, KS_VK_MEM_DEVICE, &a), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "second", 600u << 10, KS_VK_MEM_DEVICE, &b),
                     KS_ERR_DEVICE_OOM);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'second'"));
    /* Host-side buffers do not count against the device budget. */
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "staging", 2u << 20, KS_VK_MEM_UPLOAD, &c), KS_OK);
    ks_vk_buffer_fini(ctx, &a);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "second", 600u << 10, KS_VK_MEM_DEVICE, &b), KS_OK);
    ks_vk_buffer_fini(ctx, &b);
    ks_vk_buffer_fini(ctx, &c);
    done_ctx(ctx);

    setenv("KESTREL_VK_BUDGET_MB", "lots", 1);
    ck_assert_int_eq(ks_vk_ctx_create(NULL, &ctx), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "KESTREL_VK_BUDGET_MB"));
    unsetenv("KESTREL_VK_BUDGET_MB");

    /* The real heap budget: more than the whole heap never fits. */
    ctx = make_ctx();
    uint64_t budget = 0, usage = 0;
    ck_assert_int_eq(ks_vk_heap_budget(ctx, 0, &budget, &usage), KS_OK);
    ck_assert_uint_gt(budget, 0);
    ck_assert_int_eq(ks_vk_heap_budget(ctx, 99, &budget, &usage), KS_ERR_INVALID_ARG);
    uint64_t heap0 = ctx->mem_props.memoryHeaps[0].size;
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "too_big", heap0 + (64u << 20), KS_VK_MEM_DEVICE,
                                       &a), KS_ERR_DEVICE_OOM);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "too_big"));
    done_ctx(ctx);
}
END_TEST

START_TEST(report_with_device)
{
    ks_status st;
    char *out;

    set_accel_roots();
    out = print_devices(0, &st);
    ck_assert_int_eq(st, KS_OK);
    ck_assert_ptr_nonnull(strstr(out, "Vulkan devices:"));
    ck_assert_ptr_nonnull(strstr(out, "Kestrel's choice"));
    ck_assert_ptr_nonnull(strstr(out, "maxStorageBufferRange"));
    ck_assert_ptr_nonnull(strstr(out, "Feature mask"));
    ck_assert_ptr_null(strstr(out, "run on the CPU"));
    if (lavapipe_installed())
        ck_assert_ptr_nonnull(strstr(out, "llvmpipe"));
    fputs(out, stdout);
    free(out);

    out = print_devices(KS_DEVICES_JSON, &st);
    ck_assert_int_eq(st, KS_OK);
    ck_assert_ptr_nonnull(strstr(out, "\"cpu_only\":false"));
    ck_assert_ptr_nonnull(strstr(out, "\"chosen\":true"));
    ck_assert_ptr_nonnull(strstr(out, "\"subgroup\":{"));
    free(out);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}
END_TEST

#endif /* KS_HAVE_VULKAN */

static Suite *
host_suite(void)
{
    Suite *s = suite_create("vk-host");
    TCase *t;

    t = tcase_create("accel");
    tcase_add_test(t, accel_fake_tree);
    tcase_add_test(t, accel_absent_tree);
    suite_add_tcase(s, t);
    t = tcase_create("drm");
    tcase_add_test(t, drm_match_nothing);
    suite_add_tcase(s, t);
    t = tcase_create("report");
    tcase_add_test(t, report_without_driver);
    suite_add_tcase(s, t);
#ifdef KS_HAVE_VULKAN
    t = tcase_create("helpers");
    tcase_add_test(t, mask_parse);
    tcase_add_test(t, result_mapping);
    tcase_add_test(t, choose_order);
    tcase_add_test(t, preamble);
    tcase_add_test(t, cache_dir_choice);
    suite_add_tcase(s, t);
#ifdef KS_HAVE_GLSLANG
    t = tcase_create("compile");
    tcase_add_test(t, compile_ok);
    tcase_add_test(t, compile_errors_carry_log);
    suite_add_tcase(s, t);
#endif
#endif
    return s;
}

#ifdef KS_HAVE_VULKAN
static Suite *
vulkan_suite(void)
{
    Suite *s = suite_create("vk");
    TCase *t;

    t = tcase_create("device");
    tcase_add_test(t, enumerate);
    tcase_add_test(t, context_and_mask);
    tcase_add_test(t, report_with_device);
    suite_add_tcase(s, t);
    t = tcase_create("memory");
    tcase_add_test(t, upload_readback);
    tcase_add_test(t, simulated_budget);
    suite_add_tcase(s, t);
#ifdef KS_HAVE_GLSLANG
    t = tcase_create("pipeline");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, compile_and_dispatch);
    tcase_add_test(t, pipeline_cache_file);
    suite_add_tcase(s, t);
    t = tcase_create("cache");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, shader_cache);
    tcase_add_test(t, swapped_entry_rebuilt);
    tcase_add_test(t, fifo_entries_ignored);
    tcase_add_test(t, rejected_entry_rebuilt_once);
    tcase_add_test(t, deferred_pipelines);
    tcase_add_test(t, costs_fifo_ignored);
    tcase_add_test(t, cache_off_and_unwritable);
    tcase_add_test(t, pipeline_cache_on_demand);
    suite_add_tcase(s, t);
#endif
    return s;
}
#endif

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int
main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "host";
    SRunner *sr;
    int failed;

    if (argc > 2)
        data_dir = argv[2];
    /* Every instance these tests make runs the Khronos validation layer. */
    setenv("KESTREL_VALIDATE", "1", 1);
    unsetenv("KESTREL_VK_MASK");
    unsetenv("KESTREL_VK_BUDGET_MB");
    unsetenv("KESTREL_NO_CACHE");

    if (strcmp(mode, "vulkan") == 0) {
#ifndef KS_HAVE_VULKAN
        printf("skip: Kestrel was built without Vulkan (install libvulkan-dev)\n");
        return 77;
#else
        uint32_t n = 0;

        if (ks_vk_devices_list(NULL, &n) != KS_OK || n == 0) {
            printf("skip: no Vulkan device: %s\n", ks_last_error());
            return 77;
        }
        /* Contexts read and write the disk cache here, never in $HOME. */
        snprintf(cache_root, sizeof cache_root, "/tmp/kestrel-test-vk-XXXXXX");
        if (!mkdtemp(cache_root)) {
            perror("mkdtemp");
            return 1;
        }
        setenv("KESTREL_CACHE_DIR", cache_root, 1);
        sr = srunner_create(vulkan_suite());
#endif
    } else {
        sr = srunner_create(host_suite());
    }
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (cache_root[0])
        nftw(cache_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
}
