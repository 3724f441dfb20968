/* Run-time GLSL -> SPIR-V through glslang's C interface
 * (glslang/Include/glslang_c_interface.h). The layer compiler generates a
 * variant of a shader template per (quant type, activation, epilogue...)
 * as #define lines; they go in as a glslang preamble, so the template's own
 * #version line stays first. glslang's process state is set up once and
 * kept for the life of the process. A failing compile returns glslang's
 * log in the error message. */
#include "driver/vk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"

#ifdef KS_HAVE_GLSLANG
#include <pthread.h>

#include <glslang/Include/glslang_c_interface.h>
#include <glslang/Public/resource_limits_c.h>
#endif

static bool
is_ident_char(char c, bool first)
{
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (!first && c >= '0' && c <= '9');
}

ks_status
ks_vk_preamble(const char *const *defines, uint32_t n, char **out)
{
    size_t cap = 1, used = 0;
    char *s;

    *out = NULL;
    for (uint32_t i = 0; i < n; i++) {
        const char *d = defines[i];
        size_t len, name_len;

        if (!d)
            return ks_error(KS_ERR_INVALID_ARG, "vk: define %u is NULL", i);
        len = strlen(d);
        name_len = strcspn(d, "=");
        if (name_len == 0)
            return ks_error(KS_ERR_INVALID_ARG, "vk: define %u ('%s') has no name", i, d);
        for (size_t k = 0; k < name_len; k++)
            if (!is_ident_char(d[k], k == 0))
                return ks_error(KS_ERR_INVALID_ARG, "vk: define '%s': '%.*s' is not an "
                                "identifier", d, (int)name_len, d);
        if (strpbrk(d, "\n\r\\"))
            return ks_error(KS_ERR_INVALID_ARG, "vk: define '%.*s' contains a line break "
                            "or backslash", (int)name_len, d);
        cap += len + sizeof("#define  \n");
    }
    s = malloc(cap);
    if (!s)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for a %zu-byte preamble", cap);
    s[0] = '\0';
    for (uint32_t i = 0; i < n; i++) {
        const char *d = defines[i];
        size_t name_len = strcspn(d, "=");
        const char *value = d[name_len] == '=' ? d + name_len + 1 : "";

        used += (size_t)snprintf(s + used, cap - used, "#define %.*s %s\n",
                                 (int)name_len, d, value);
    }
    *out = s;
    return KS_OK;
}

void
ks_vk_spirv_fini(ks_vk_spirv *s)
{
    if (!s)
        return;
    free(s->words);
    s->words = NULL;
    s->n_words = 0;
}

#ifdef KS_HAVE_GLSLANG

static pthread_once_t glslang_once = PTHREAD_ONCE_INIT;
static int glslang_ready;

static void
glslang_init(void)
{
    glslang_ready = glslang_initialize_process();
}

static void
targets_for(uint32_t api, glslang_target_client_version_t *client,
            glslang_target_language_version_t *spv)
{
    uint32_t minor = VK_API_VERSION_MINOR(api);

    /* Vulkan 1.3 devices get SPIR-V 1.5 too: for SPIR-V 1.6 glslang turns
     * local_size_x_id into LocalSizeId, which needs the maintenance4
     * feature (VUID-RuntimeSpirv-LocalSizeId-06434), and 1.6 adds nothing
     * the kernels use. */
    if (api == 0 || minor >= 2) {
        *client = GLSLANG_TARGET_VULKAN_1_2;
        *spv = GLSLANG_TARGET_SPV_1_5;
    } else if (minor == 1) {
        *client = GLSLANG_TARGET_VULKAN_1_1;
        *spv = GLSLANG_TARGET_SPV_1_3;
    } else {
        *client = GLSLANG_TARGET_VULKAN_1_0;
        *spv = GLSLANG_TARGET_SPV_1_0;
    }
}

static ks_status
compile_failed(const char *name, const char *stage, const char *log)
{
    size_t len = log ? strlen(log) : 0;

    /* glslang's lines end in newlines; the message should not. */
    while (len > 0 && (log[len - 1] == '\n' || log[len - 1] == '\r'))
        len--;
    return ks_error(KS_ERR_INVALID_ARG, "vk: GLSL compile of '%s' failed (%s): %.*s",
                    name, stage, (int)len, len ? log : "(glslang gave no log)");
}

ks_status
ks_vk_compile(const char *source, const ks_vk_compile_params *p, ks_vk_spirv *out)
{
    static const ks_vk_compile_params defaults = { 0 };
    glslang_shader_t *shader = NULL;
    glslang_program_t *program = NULL;
    char *preamble = NULL;
    const char *name;
    ks_status st;
    uint64_t t0 = ks_now_ns();

    memset(out, 0, sizeof(*out));
    if (!p)
        p = &defaults;
    name = p->name ? p->name : "shader";
    if (!source)
        return ks_error(KS_ERR_INVALID_ARG, "vk: shader '%s' has no source", name);
    if ((st = ks_vk_preamble(p->defines, p->n_defines, &preamble)) != KS_OK)
        return st;
    pthread_once(&glslang_once, glslang_init);
    if (!glslang_ready) {
        st = ks_error(KS_ERR_INTERNAL, "vk: glslang_initialize_process failed");
        goto fail;
    }

    glslang_input_t in = {
        .language = GLSLANG_SOURCE_GLSL,
        .stage = GLSLANG_STAGE_COMPUTE,
        .client = GLSLANG_CLIENT_VULKAN,
        .target_language = GLSLANG_TARGET_SPV,
        .code = source,
        .default_version = 450,
        .default_profile = GLSLANG_NO_PROFILE,
        .force_default_version_and_profile = 0,
        .forward_compatible = 0,
        .messages = GLSLANG_MSG_SPV_RULES_BIT | GLSLANG_MSG_VULKAN_RULES_BIT,
        .resource = glslang_default_resource(),
    };
    targets_for(p->vk_api_version, &in.client_version, &in.target_language_version);

    shader = glslang_shader_create(&in);
    if (!shader) {
        st = ks_error(KS_ERR_NOMEM, "vk: glslang could not create shader '%s'", name);
        goto fail;
    }
    if (preamble[0])
        glslang_shader_set_preamble(shader, preamble);
    if (!glslang_shader_preprocess(shader, &in)) {
        st = compile_failed(name, "preprocess", glslang_shader_get_info_log(shader));
        goto fail;
    }
    if (!glslang_shader_parse(shader, &in)) {
        st = compile_failed(name, "parse", glslang_shader_get_info_log(shader));
        goto fail;
    }
    program = glslang_program_create();
    if (!program) {
        st = ks_error(KS_ERR_NOMEM, "vk: glslang could not create a program for '%s'", name);
        goto fail;
    }
    glslang_program_add_shader(program, shader);
    if (!glslang_program_link(program, GLSLANG_MSG_SPV_RULES_BIT |
                                       GLSLANG_MSG_VULKAN_RULES_BIT)) {
        st = compile_failed(name, "link", glslang_program_get_info_log(program));
        goto fail;
    }
    glslang_program_SPIRV_generate(program, GLSLANG_STAGE_COMPUTE);
    const char *msgs = glslang_program_SPIRV_get_messages(program);
    if (msgs && *msgs)
        ks_log(KS_LOG_DEBUG, "vk", "glslang on '%s': %s", name, msgs);
    size_t n = glslang_program_SPIRV_get_size(program);
    if (n == 0) {
        st = compile_failed(name, "SPIR-V generation", msgs);
        goto fail;
    }
    out->words = malloc(n * sizeof(uint32_t));
    if (!out->words) {
        st = ks_error(KS_ERR_NOMEM, "vk: no memory for %zu SPIR-V words", n);
        goto fail;
    }
    glslang_program_SPIRV_get(program, out->words);
    out->n_words = n;
    ks_log(KS_LOG_DEBUG, "vk", "compiled '%s' (%u defines): %zu words in %.1f ms", name,
           p->n_defines, n, (double)(ks_now_ns() - t0) / 1e6);
    st = KS_OK;
fail:
    if (program)
        glslang_program_delete(program);
    if (shader)
        glslang_shader_delete(shader);
    free(preamble);
    return st;
}

#else /* !KS_HAVE_GLSLANG */

ks_status
ks_vk_compile(const char *source, const ks_vk_compile_params *p, ks_vk_spirv *out)
{
    (void)source;
    memset(out, 0, sizeof(*out));
    return ks_error(KS_ERR_UNSUPPORTED, "vk: shader '%s' cannot be compiled: Kestrel "
                    "was built without glslang (Debian: glslang-dev)",
                    p && p->name ? p->name : "shader");
}

#endif
