/* The target kinds this build has (scheduler/target.h): the CPU always,
 * Vulkan when the build found Vulkan and glslang. A new kind is added
 * here and in its own file; the session finds kinds by name. */
#include "runtime/session_priv.h"
#include "scheduler/target.h"

#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)
#include "runtime/vk_forward.h"
#endif

void
ks_targets_register_builtin(void)
{
    ks_target_register(&ks_cpu_target_kind);
#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)
    ks_target_register(&ks_vk_target_kind);
#endif
}
