/* The NEON kernels with sdot (FEAT_DotProd), built with
 * -march=armv8.2-a+dotprod and used only where HWCAP_ASIMDDP is set. */
#define KS_NEON_LEVEL 1
#define KS_NEON_FILL  ks_quant_ops_neon_dot
#include "runtime/cpu/quant_neon_body.h"
