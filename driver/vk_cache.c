/* The disk cache: SPIR-V of the embedded shader templates, one file per
 * variant, and the context's VkPipelineCache, so that a second start
 * compiles nothing (DESIGN.md, "Compile").
 *
 * Data flow: ks_vk_ctx_create calls ks_vk_cache_ctx_init, which picks the
 * directory (ks_vk_cache_dir) and loads <dir>/pipelines-<device UUID>.bin
 * into ctx->pipeline_cache; ks_vk_ctx_destroy saves it back. Kernels ask
 * ks_vk_shader_get for SPIR-V: it hashes everything the words depend on
 * into a 128-bit key, reads <dir>/spirv/<key>.spv when it is there and
 * whole, and otherwise compiles the template (ks_vk_compile) and writes
 * the file through a temporary name and rename(), so concurrent processes
 * only ever see whole files. The cache is an optimisation: a directory
 * that cannot be made or written costs a log line, never an error.
 *
 * A SPIR-V file is a 40-byte header (magic "KSPV", FORMAT_VERSION, the
 * key, the word count, a 64-bit checksum) followed by the words, in host
 * byte order (the cache belongs to one machine). The checksum covers the
 * full cache key (template text, defines, target API, device UUID, driver
 * version and ID) as well as the words, so another variant's valid file
 * copied over this one's name fails it even with the header's key field
 * rewritten to match, and is rebuilt.
 *
 * Files are opened with O_NONBLOCK and must be regular files
 * (ks_file_read): a FIFO or device at an entry's name is "not a regular
 * file, ignored" instead of a hang.
 *
 * When the driver rejects a pipeline made from cached inputs (a
 * VK_ERROR_UNKNOWN from vkCreateShaderModule or vkCreateComputePipelines:
 * ks_vk_shader_pipeline_create), the .spv file and the pipeline cache are
 * deleted, the template compiled from source and the pipeline made once
 * more; a second failure is an error naming the file.
 *
 * Trust: the cache directory is trusted to be the user's own, as writable
 * as the binary itself. The checksums catch accidents (torn writes, bit
 * rot, disk-full truncation, files swapped or copied between names), not
 * an attacker: anyone who can write there can write a file whose
 * checksum matches, and the driver runs whatever SPIR-V it is given. */
#include "driver/vk.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/base.h"
#include "driver/vk_shaders.h"

#define SPV_MAGIC 0x5650534Bu  /* "KSPV" read as a little-endian word */
/* Bump when the file layout, the checksum or the key's inputs change.
 * 2: the checksum covers the key. */
#define FORMAT_VERSION 2u
#define SPIRV_MAGIC 0x07230203u
/* Larger files are not ours: no template comes near 64 MiB of SPIR-V. */
#define MAX_WORDS (16u << 20)
#define PATH_BYTES 4096

typedef struct spv_header {
    uint32_t magic;
    uint32_t version;
    uint64_t key[2];
    uint64_t n_words;
    uint64_t checksum;  /* checksum(): the key, the word count, the words */
} spv_header;

_Static_assert(sizeof(spv_header) == 40, "spv_header layout");

static atomic_uint tmp_serial;

/* ---- Hashing ---------------------------------------------------------- */

/* Two 64-bit lanes with different multipliers (FNV-1a, and a
 * multiply-xorshift), each finished with the splitmix64 mixer. Not
 * cryptographic: it only has to tell variants apart. */
typedef struct hasher {
    uint64_t a, b, n;
} hasher;

static void
hash_init(hasher *h)
{
    h->a = KS_FNV1A_INIT;
    h->b = 0x6a09e667f3bcc909u;
    h->n = 0;
}

static void
hash_bytes(hasher *h, const void *data, size_t size)
{
    const uint8_t *p = data;

    h->a = ks_fnv1a(h->a, data, size);
    for (size_t i = 0; i < size; i++) {
        h->b = (h->b + p[i] + 1u) * 0x9e3779b97f4a7c15u;
        h->b ^= h->b >> 29;
    }
    h->n += size;
}

static void
hash_u64(hasher *h, uint64_t v)
{
    hash_bytes(h, &v, sizeof v);
}

/* A string with its length first, so that ("ab", "c") and ("a", "bc")
 * differ. */
static void
hash_str(hasher *h, const char *s)
{
    size_t len = strlen(s);

    hash_u64(h, len);
    hash_bytes(h, s, len);
}

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void
hash_final(const hasher *h, uint64_t out[2])
{
    out[0] = mix64(h->a ^ h->n);
    out[1] = mix64(h->b ^ mix64(h->a + h->n));
}

/* Keyed with the full cache key: the same words under another key give
 * another checksum. */
static uint64_t
checksum(const uint64_t key[2], const uint32_t *words, size_t n)
{
    hasher h;
    uint64_t k[2];

    hash_init(&h);
    hash_u64(&h, key[0]);
    hash_u64(&h, key[1]);
    hash_u64(&h, n);
    hash_bytes(&h, words, n * sizeof(uint32_t));
    hash_final(&h, k);
    return k[0] ^ k[1];
}

/* ---- Directory -------------------------------------------------------- */

const char *
ks_vk_cache_dir(char *buf, size_t size)
{
    return ks_env_flag("KESTREL_NO_CACHE") ? NULL : ks_cache_dir(buf, size);
}

/* mkdir -p. False with errno set when some component cannot be made. */
static bool
make_dirs(const char *path)
{
    char tmp[PATH_BYTES];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return false;
    }
    memcpy(tmp, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return false;
        tmp[i] = c;
    }
    struct stat sb;
    if (stat(path, &sb) != 0)
        return false;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return false;
    }
    return true;
}

/* The first failure to write the cache is a warning, the rest debug
 * lines: one unwritable directory should not flood the log. */
static void
write_failed(ks_vk_ctx *ctx, const char *what, const char *path, int err)
{
    ks_log(ctx->cache_warned ? KS_LOG_DEBUG : KS_LOG_WARN, "vk",
           "cache: cannot %s %s: %s (continuing without the disk cache)", what, path,
           strerror(err));
    ctx->cache_warned = true;
}

/* Writes |size| bytes of |head| then |size2| of |body| to |path| through
 * a temporary file in the same directory and rename(). */
static bool
write_atomic(const char *path, const void *head, size_t size, const void *body,
             size_t size2, int *err)
{
    char tmp[PATH_BYTES + 64];
    FILE *f;
    bool ok;

    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&tmp_serial, 1u)) >= (int)sizeof tmp) {
        *err = ENAMETOOLONG;
        return false;
    }
    if (!(f = fopen(tmp, "wb"))) {
        *err = errno;
        return false;
    }
    ok = fwrite(head, 1, size, f) == size && (!size2 || fwrite(body, 1, size2, f) == size2);
    *err = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        *err = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        *err = errno;
    }
    if (!ok)
        remove(tmp);
    return ok;
}

/* ---- SPIR-V entries --------------------------------------------------- */

/* Reads and checks the entry at |path|. Returns 1 with *out filled when
 * valid, 0 when it is absent or cannot be opened (a directory we cannot
 * use: write_entry reports that; not a regular file: logged, ignored, and
 * replaced by the rebuilt file's rename), -1 when present but unusable
 * (|why| says how). */
static int
read_entry(const char *path, const uint64_t key[2], ks_vk_spirv *out, char *why,
           size_t why_size)
{
    const size_t max_bytes = sizeof(spv_header) + (size_t)MAX_WORDS * sizeof(uint32_t);
    spv_header h;
    char *data = NULL;
    size_t len = 0;
    uint32_t *words = NULL;
    ks_status st;
    int rc = -1;

    if ((st = ks_file_read(path, max_bytes, &data, &len)) != KS_OK) {
        if (st == KS_ERR_UNSUPPORTED) {
            ks_log(KS_LOG_WARN, "vk", "cache: %s; not a regular file, ignored", ks_last_error());
            return 0;
        }
        if (st == KS_ERR_CORRUPT) {
            snprintf(why, why_size, "more than %zu bytes", max_bytes);
            return -1;
        }
        if (errno != ENOENT)
            ks_log(KS_LOG_DEBUG, "vk", "cache: %s", ks_last_error());
        return 0;
    }
    if (len < sizeof h) {
        snprintf(why, why_size, "%zu bytes, shorter than the %zu-byte header", len,
                 sizeof h);
        goto out;
    }
    memcpy(&h, data, sizeof h);
    if (h.magic != SPV_MAGIC) {
        snprintf(why, why_size, "magic 0x%08x, expected 0x%08x", h.magic, SPV_MAGIC);
        goto out;
    }
    if (h.version != FORMAT_VERSION) {
        snprintf(why, why_size, "format version %u, expected %u", h.version,
                 FORMAT_VERSION);
        goto out;
    }
    if (h.key[0] != key[0] || h.key[1] != key[1]) {
        snprintf(why, why_size, "key %016" PRIx64 "%016" PRIx64 " is not its name's",
                 h.key[0], h.key[1]);
        goto out;
    }
    if (h.n_words < 5 || h.n_words > MAX_WORDS ||
        (uint64_t)len != sizeof h + h.n_words * sizeof(uint32_t)) {
        snprintf(why, why_size, "%zu bytes for %" PRIu64 " words", len, h.n_words);
        goto out;
    }
    words = malloc(h.n_words * sizeof(uint32_t));
    if (!words) {
        snprintf(why, why_size, "no memory for %" PRIu64 " words", h.n_words);
        goto out;
    }
    memcpy(words, data + sizeof h, h.n_words * sizeof(uint32_t));
    if (checksum(key, words, h.n_words) != h.checksum || words[0] != SPIRV_MAGIC) {
        snprintf(why, why_size, "checksum mismatch");
        goto out;
    }
    out->words = words;
    out->n_words = h.n_words;
    words = NULL;
    rc = 1;
out:
    free(words);
    free(data);
    return rc;
}

static void
write_entry(ks_vk_ctx *ctx, const char *dir, const char *path, const uint64_t key[2],
            const ks_vk_spirv *spv)
{
    spv_header h = {
        .magic = SPV_MAGIC, .version = FORMAT_VERSION, .key = { key[0], key[1] },
        .n_words = spv->n_words, .checksum = checksum(key, spv->words, spv->n_words),
    };
    int err = 0;

    if (!make_dirs(dir)) {
        write_failed(ctx, "make directory", dir, errno);
        return;
    }
    if (!write_atomic(path, &h, sizeof h, spv->words, spv->n_words * sizeof(uint32_t),
                      &err))
        write_failed(ctx, "write", path, err);
}

/* ks_vk_shader_get, also giving the entry's path (|path|, "" when the disk
 * cache is off) and whether the words came from it (*hit). */
static ks_status
shader_lookup(ks_vk_ctx *ctx, const char *template_name, const ks_vk_compile_params *p,
              ks_vk_spirv *out, char *path, size_t path_size, bool *hit)
{
    static const ks_vk_compile_params none;
    const char *src;
    char dir[PATH_BYTES], why[160];
    uint64_t key[2], t0 = ks_now_ns();
    uint32_t api;
    hasher h;
    ks_status st;
    int found = 0;
    bool use_disk = false;

    memset(out, 0, sizeof(*out));
    path[0] = '\0';
    *hit = false;
    if (!p)
        p = &none;
    if (!template_name || !(src = ks_vk_shader_source(template_name)))
        return ks_error(KS_ERR_INVALID_ARG, "vk: no embedded shader template '%s'",
                        template_name ? template_name : "(null)");
    if (p->n_defines && !p->defines)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %u defines without a list",
                        template_name, p->n_defines);
    for (uint32_t i = 0; i < p->n_defines; i++)
        if (!p->defines[i])
            return ks_error(KS_ERR_INVALID_ARG, "vk: %s: define %u is NULL", template_name,
                            i);
    /* The SPIR-V depends on the target's major.minor only. */
    api = p->vk_api_version ? p->vk_api_version : ctx->api_version;
    api = VK_MAKE_API_VERSION(0, VK_API_VERSION_MAJOR(api), VK_API_VERSION_MINOR(api), 0);
    ks_vk_compile_params cp = *p;
    cp.name = p->name ? p->name : template_name;
    cp.vk_api_version = api;

    hash_init(&h);
    hash_u64(&h, FORMAT_VERSION);
    hash_str(&h, src);
    hash_u64(&h, p->n_defines);
    for (uint32_t i = 0; i < p->n_defines; i++)
        hash_str(&h, p->defines[i]);
    hash_u64(&h, api);
    hash_bytes(&h, ctx->info.device_uuid, VK_UUID_SIZE);
    hash_u64(&h, ctx->info.driver_version);
    hash_u64(&h, ctx->info.driver_id);
    hash_final(&h, key);

    if (ctx->cache_dir) {
        int n1 = snprintf(dir, sizeof dir, "%s/spirv", ctx->cache_dir);
        int n2 = snprintf(path, path_size, "%s/%016" PRIx64 "%016" PRIx64 ".spv", dir,
                          key[0], key[1]);
        if (n1 < 0 || (size_t)n1 >= sizeof dir || n2 < 0 || (size_t)n2 >= path_size) {
            write_failed(ctx, "use the long directory", ctx->cache_dir, ENAMETOOLONG);
            path[0] = '\0';
        } else {
            use_disk = true;
            why[0] = '\0';
            found = read_entry(path, key, out, why, sizeof why);
            if (found == 1) {
                ctx->n_shader_hits++;
                *hit = true;
                ks_log(KS_LOG_DEBUG, "vk", "cache hit: %s (%s): %zu words in %.2f ms",
                       cp.name, path, out->n_words, (double)(ks_now_ns() - t0) / 1e6);
                return KS_OK;
            }
        }
    }

    if ((st = ks_vk_compile(src, &cp, out)) != KS_OK)
        return st;
    ctx->n_shader_compiled++;
    if (found < 0)
        ctx->n_shader_rebuilt++;
    if (!use_disk)
        return KS_OK;
    write_entry(ctx, dir, path, key, out);
    if (found < 0)
        ks_log(KS_LOG_WARN, "vk", "SPIR-V cache file %s was corrupt or stale (%s), "
               "rebuilt", path, why);
    else
        ks_log(KS_LOG_DEBUG, "vk", "cache miss: %s compiled and stored as %s in %.1f ms",
               cp.name, path, (double)(ks_now_ns() - t0) / 1e6);
    return KS_OK;
}

ks_status
ks_vk_shader_get(ks_vk_ctx *ctx, const char *template_name, const ks_vk_compile_params *p,
                 ks_vk_spirv *out)
{
    char path[PATH_BYTES + 64];
    bool hit;

    return shader_lookup(ctx, template_name, p, out, path, sizeof path, &hit);
}

static bool pipeline_path(const ks_vk_ctx *ctx, char *buf, size_t size);

/* Forgets what the pipeline cache holds: the file is deleted and
 * ctx->pipeline_cache replaced by an empty one (pipelines already made
 * from the old one stay valid). |path| gets the file's name ("" if none). */
static void
drop_pipeline_cache(ks_vk_ctx *ctx, char *path, size_t size)
{
    VkPipelineCacheCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO };

    path[0] = '\0';
    if (!ctx->pipeline_cache)
        return;
    if (ctx->cache_dir && pipeline_path(ctx, path, size) && unlink(path) != 0 &&
        errno != ENOENT)
        ks_log(KS_LOG_WARN, "vk", "cache: cannot delete %s: %s", path, strerror(errno));
    vkDestroyPipelineCache(ctx->device, ctx->pipeline_cache, NULL);
    if (vkCreatePipelineCache(ctx->device, &ci, NULL, &ctx->pipeline_cache) != VK_SUCCESS)
        ctx->pipeline_cache = VK_NULL_HANDLE;
}

/* A pipeline the driver rejected with KS_ERR_INTERNAL (|first| its
 * message): deletes its .spv file (|path|) and the pipeline cache,
 * compiles the template from source and builds the pipeline again, into
 * the shell *pl (a deferred one) or a new pipeline (*pl NULL). */
static ks_status
rebuild(ks_vk_ctx *ctx, const char *template_name, const ks_vk_compile_params *cp,
        const ks_vk_pipeline_params *pp, const char *path, const char *first,
        ks_vk_pipeline **pl)
{
    char pc_path[PATH_BYTES + 64], again[512], spv_path[PATH_BYTES + 64];
    const char *name = pp->name ? pp->name : template_name;
    ks_vk_pipeline_params q = *pp;
    ks_vk_spirv spv;
    ks_status st;
    bool hit;

    if (path[0] && unlink(path) != 0 && errno != ENOENT)
        ks_log(KS_LOG_WARN, "vk", "cache: cannot delete %s: %s", path, strerror(errno));
    drop_pipeline_cache(ctx, pc_path, sizeof pc_path);
    ks_log(KS_LOG_WARN, "vk", "pipeline '%s' was rejected (%s); deleted %s%s%s and "
           "compiling it from source", name, first, path[0] ? path : "no SPIR-V file",
           pc_path[0] ? " and the pipeline cache " : "", pc_path);
    if ((st = shader_lookup(ctx, template_name, cp, &spv, spv_path, sizeof spv_path,
                            &hit)) != KS_OK)
        return st;
    if (hit)  /* another process wrote it meanwhile; it is as good as ours */
        ks_log(KS_LOG_DEBUG, "vk", "cache: %s came back before the rebuild", spv_path);
    ctx->n_shader_rebuilt++;
    q.spirv = spv.words;
    q.n_words = spv.n_words;
    if (*pl) {
        if ((st = ks_vk_pipeline_remodule(ctx, *pl, spv.words, spv.n_words)) == KS_OK)
            st = ks_vk_pipeline_build(ctx, *pl, &q);
    } else {
        st = ks_vk_pipeline_create(ctx, &q, pl);
    }
    ks_vk_spirv_fini(&spv);
    if (st != KS_OK) {
        snprintf(again, sizeof again, "%s", ks_last_error());
        return ks_error(st, "vk: pipeline '%s' from %s: %s; it failed before too (%s), "
                        "and again after that file was deleted and rebuilt from source",
                        name, path[0] ? path : "freshly compiled SPIR-V", again, first);
    }
    return KS_OK;
}

/* A deferred build: copies of everything ks_vk_shader_pipeline_create got,
 * so that the build (on a worker) and a rebuild (at finish) can run after
 * the caller's arrays are gone. */
enum { MAX_DEFER_DEFINES = 16, DEFINE_BYTES = 64 };

typedef struct ks_vk_deferred {
    ks_vk_pipeline      *pl;
    char                 tmpl[64];
    char                 name[64];
    char                 defs[MAX_DEFER_DEFINES][DEFINE_BYTES];
    const char          *def_ptrs[MAX_DEFER_DEFINES];
    ks_vk_compile_params cp;
    ks_vk_pipeline_params pp;
    uint32_t             spec[KS_VK_MAX_SPEC];
    VkDescriptorType     types[KS_VK_MAX_BINDINGS];
    char                 path[PATH_BYTES + 64];  /* its .spv file */
    ks_status            st;
    char                 msg[512];
} ks_vk_deferred;

/* Copies the arguments into a new deferred entry; false when they do not
 * fit one (too many or too long defines), and the pipeline is made now. */
static bool
defer_copy(ks_vk_ctx *ctx, const char *template_name, const ks_vk_compile_params *cp,
           const ks_vk_pipeline_params *pp, ks_vk_deferred **out)
{
    ks_vk_deferred *d;

    if (!cp || cp->n_defines > MAX_DEFER_DEFINES || pp->n_spec > KS_VK_MAX_SPEC ||
        pp->n_buffers > KS_VK_MAX_BINDINGS || strlen(template_name) >= sizeof d->tmpl)
        return false;
    for (uint32_t i = 0; i < cp->n_defines; i++)
        if (!cp->defines[i] || strlen(cp->defines[i]) >= DEFINE_BYTES)
            return false;
    if (ctx->n_deferred == ctx->cap_deferred) {
        uint32_t cap = ctx->cap_deferred ? 2u * ctx->cap_deferred : 16u;
        ks_vk_deferred *grown = realloc(ctx->deferred, cap * sizeof(*grown));
        if (!grown)
            return false;
        ctx->deferred = grown;
        ctx->cap_deferred = cap;
    }
    d = &ctx->deferred[ctx->n_deferred];
    memset(d, 0, sizeof(*d));
    snprintf(d->tmpl, sizeof d->tmpl, "%s", template_name);
    snprintf(d->name, sizeof d->name, "%s", pp->name ? pp->name : template_name);
    for (uint32_t i = 0; i < cp->n_defines; i++) {
        snprintf(d->defs[i], DEFINE_BYTES, "%s", cp->defines[i]);
        d->def_ptrs[i] = d->defs[i];
    }
    d->cp = *cp;
    d->cp.defines = d->def_ptrs;
    d->cp.name = cp->name ? d->name : NULL;
    d->pp = *pp;
    d->pp.name = d->name;
    d->pp.spirv = NULL;
    d->pp.n_words = 0;
    memcpy(d->spec, pp->spec, pp->n_spec * sizeof(uint32_t));
    d->pp.spec = d->spec;
    if (pp->types) {
        memcpy(d->types, pp->types, pp->n_buffers * sizeof(*pp->types));
        d->pp.types = d->types;
    }
    *out = d;
    return true;
}

ks_status
ks_vk_shader_pipeline_create(ks_vk_ctx *ctx, const char *template_name,
                             const ks_vk_compile_params *cp,
                             const ks_vk_pipeline_params *pp, ks_vk_pipeline **out)
{
    char path[PATH_BYTES + 64], first[512];
    ks_vk_pipeline_params q = *pp;
    ks_vk_deferred *d = NULL;
    ks_vk_spirv spv;
    ks_status st;
    bool hit;

    *out = NULL;
    if ((st = shader_lookup(ctx, template_name, cp, &spv, path, sizeof path, &hit)) != KS_OK)
        return st;
    q.spirv = spv.words;
    q.n_words = spv.n_words;
    if (ctx->defer && defer_copy(ctx, template_name, cp, pp, &d)) {
        st = ks_vk_pipeline_shell(ctx, &q, out);
        ks_vk_spirv_fini(&spv);
        if (st != KS_OK)
            return st;
        d->pl = *out;
        d->pp.n_words = q.n_words;
        snprintf(d->path, sizeof d->path, "%s", path);
        ctx->n_deferred++;
        return KS_OK;
    }
    st = ks_vk_pipeline_create(ctx, &q, out);
    ks_vk_spirv_fini(&spv);
    /* VK_ERROR_UNKNOWN and its kin (not out of memory, not device lost):
     * the driver may be choking on what the cache gave it. Without a disk
     * cache nothing came from it, so there is nothing to retry. */
    if (st != KS_ERR_INTERNAL || !ctx->cache_dir)
        return st;
    snprintf(first, sizeof first, "%s", ks_last_error());
    return rebuild(ctx, template_name, cp, pp, path, first, out);
}

void
ks_vk_pipelines_defer(ks_vk_ctx *ctx)
{
    ctx->defer = true;
}

typedef struct build_pool {
    ks_vk_ctx  *ctx;
    atomic_uint next;
} build_pool;

static void *
build_worker(void *arg)
{
    build_pool *bp = arg;
    ks_vk_ctx *ctx = bp->ctx;
    unsigned i;

    while ((i = atomic_fetch_add(&bp->next, 1u)) < ctx->n_deferred) {
        ks_vk_deferred *d = &ctx->deferred[i];
        d->st = ks_vk_pipeline_build(ctx, d->pl, &d->pp);
        if (d->st != KS_OK)
            snprintf(d->msg, sizeof d->msg, "%s", ks_last_error());
    }
    return NULL;
}

ks_status
ks_vk_pipelines_finish(ks_vk_ctx *ctx, uint32_t n_threads)
{
    pthread_t th[8];
    uint32_t n_th = 0;
    build_pool bp = { .ctx = ctx };
    uint64_t t0 = ks_now_ns();
    ks_status st = KS_OK;

    ctx->defer = false;
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (uint32_t)n : 1u;
    }
    if (n_threads > 8)
        n_threads = 8;
    if (n_threads > ctx->n_deferred)
        n_threads = ctx->n_deferred;
    atomic_init(&bp.next, 0u);
    /* the caller's thread works too */
    for (uint32_t i = 1; i < n_threads; i++)
        if (pthread_create(&th[n_th], NULL, build_worker, &bp) == 0)
            n_th++;
    build_worker(&bp);
    for (uint32_t i = 0; i < n_th; i++)
        pthread_join(th[i], NULL);
    for (uint32_t i = 0; i < ctx->n_deferred && st == KS_OK; i++) {
        ks_vk_deferred *d = &ctx->deferred[i];
        if (d->st == KS_OK)
            continue;
        if (d->st == KS_ERR_INTERNAL && ctx->cache_dir)
            st = rebuild(ctx, d->tmpl, &d->cp, &d->pp, d->path, d->msg, &d->pl);
        else
            st = ks_error(d->st, "%s", d->msg);
    }
    ks_log(KS_LOG_DEBUG, "vk", "%u deferred pipelines built on %u threads in %.1f ms",
           ctx->n_deferred, n_th + 1u, (double)(ks_now_ns() - t0) / 1e6);
    ctx->n_deferred = 0;
    return st;
}

/* ---- Pipeline cache --------------------------------------------------- */

static bool
pipeline_path(const ks_vk_ctx *ctx, char *buf, size_t size)
{
    char hex[2 * VK_UUID_SIZE + 1];

    for (unsigned i = 0; i < VK_UUID_SIZE; i++)
        snprintf(hex + 2 * i, 3, "%02x", ctx->info.device_uuid[i]);
    int n = snprintf(buf, size, "%s/pipelines-%s.bin", ctx->cache_dir, hex);
    return n > 0 && (size_t)n < size;
}

void
ks_vk_cache_ctx_init(ks_vk_ctx *ctx)
{
    char dir[PATH_BYTES], path[PATH_BYTES + 64];

    if (!ks_vk_cache_dir(dir, sizeof dir)) {
        ks_log(KS_LOG_DEBUG, "vk", "cache: off (%s)",
               ks_env_flag("KESTREL_NO_CACHE") ? "KESTREL_NO_CACHE" : "no directory to use");
        return;
    }
    if (!(ctx->cache_dir = strdup(dir))) {
        ks_log(KS_LOG_WARN, "vk", "cache: no memory; continuing without it");
        return;
    }
    if (!pipeline_path(ctx, path, sizeof path)) {
        write_failed(ctx, "use the long directory", dir, ENAMETOOLONG);
        return;
    }
    if (ks_vk_pipeline_cache_load(ctx, path) != KS_OK) {
        VkPipelineCacheCreateInfo ci = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        };

        ks_log(KS_LOG_WARN, "vk", "cache: %s; starting with an empty pipeline cache",
               ks_last_error());
        ctx->cache_warned = true;
        if (!ctx->pipeline_cache &&
            vkCreatePipelineCache(ctx->device, &ci, NULL, &ctx->pipeline_cache) != VK_SUCCESS)
            ctx->pipeline_cache = VK_NULL_HANDLE;
    }
    ks_log(KS_LOG_DEBUG, "vk", "cache: directory %s", dir);
}

ks_status
ks_vk_cache_save(ks_vk_ctx *ctx)
{
    char path[PATH_BYTES + 64];

    if (!ctx->cache_dir || !ctx->pipeline_cache)
        return KS_OK;
    if (!pipeline_path(ctx, path, sizeof path))
        return ks_error(KS_ERR_IO, "vk: cache directory name too long: %s", ctx->cache_dir);
    if (!make_dirs(ctx->cache_dir))
        return ks_error(KS_ERR_IO, "vk: cannot make cache directory %s: %s", ctx->cache_dir,
                        strerror(errno));
    return ks_vk_pipeline_cache_save(ctx, path);
}

void
ks_vk_cache_ctx_fini(ks_vk_ctx *ctx)
{
    if (ctx->cache_dir && ctx->pipeline_cache && ks_vk_cache_save(ctx) != KS_OK) {
        ks_log(ctx->cache_warned ? KS_LOG_DEBUG : KS_LOG_WARN, "vk", "cache: %s",
               ks_last_error());
        ctx->cache_warned = true;
    }
    free(ctx->cache_dir);
    ctx->cache_dir = NULL;
    free(ctx->deferred);
    ctx->deferred = NULL;
    ctx->n_deferred = ctx->cap_deferred = 0;
}
