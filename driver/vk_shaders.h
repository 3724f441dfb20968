/* The GLSL templates of shaders/, embedded at build time by
 * ci/embed_shaders.py with their #include lines inlined, for the run-time
 * compiler (ks_vk_compile). Nothing is read from the source tree at run
 * time. Internal; not installed. */
#ifndef KS_VK_SHADERS_H
#define KS_VK_SHADERS_H

/* The text of template |name| ("matvec.comp"), NUL-terminated, static;
 * NULL when there is no such template. Thread safe. */
const char *ks_vk_shader_source(const char *name);

#endif
