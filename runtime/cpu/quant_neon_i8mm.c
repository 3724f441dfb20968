/* The NEON kernels with sdot and smmla (FEAT_DotProd, FEAT_I8MM), built
 * with -march=armv8.2-a+dotprod+i8mm and used only where HWCAP_ASIMDDP
 * and HWCAP2_I8MM are both set. */
#define KS_NEON_LEVEL 2
#define KS_NEON_FILL  ks_quant_ops_neon_i8mm
#include "runtime/cpu/quant_neon_body.h"
