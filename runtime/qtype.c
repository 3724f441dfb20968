/* The type table. A type is "cpu" when runtime/cpu has dequantize and dot
 * product kernels for it; any other known type opens in `kestrel info` but
 * a model using it is refused with the tensor's name. */
#include "qtype.h"

#include <stdio.h>

static const ks_qtype_info table[KS_QUANT_COUNT] = {
    [KS_QUANT_F32] = { "F32", 1, 4, true },
    [KS_QUANT_F16] = { "F16", 1, 2, true },
    [KS_QUANT_Q4_0] = { "Q4_0", 32, 18, true },
    [KS_QUANT_Q4_1] = { "Q4_1", 32, 20, true },
    [KS_QUANT_Q5_0] = { "Q5_0", 32, 22, true },
    [KS_QUANT_Q5_1] = { "Q5_1", 32, 24, true },
    [KS_QUANT_Q8_0] = { "Q8_0", 32, 34, true },
    [KS_QUANT_Q8_1] = { "Q8_1", 32, 36, false },
    [KS_QUANT_Q2_K] = { "Q2_K", 256, 84, true },
    [KS_QUANT_Q3_K] = { "Q3_K", 256, 110, true },
    [KS_QUANT_Q4_K] = { "Q4_K", 256, 144, true },
    [KS_QUANT_Q5_K] = { "Q5_K", 256, 176, true },
    [KS_QUANT_Q6_K] = { "Q6_K", 256, 210, true },
    [KS_QUANT_Q8_K] = { "Q8_K", 256, 292, false },
    [KS_QUANT_IQ2_XXS] = { "IQ2_XXS", 256, 66, false },
    [KS_QUANT_IQ2_XS] = { "IQ2_XS", 256, 74, false },
    [KS_QUANT_IQ3_XXS] = { "IQ3_XXS", 256, 98, false },
    [KS_QUANT_IQ1_S] = { "IQ1_S", 256, 50, false },
    [KS_QUANT_IQ4_NL] = { "IQ4_NL", 32, 18, true },
    [KS_QUANT_IQ3_S] = { "IQ3_S", 256, 110, false },
    [KS_QUANT_IQ2_S] = { "IQ2_S", 256, 82, false },
    [KS_QUANT_IQ4_XS] = { "IQ4_XS", 256, 136, false },
    [KS_QUANT_I8] = { "I8", 1, 1, false },
    [KS_QUANT_I16] = { "I16", 1, 2, false },
    [KS_QUANT_I32] = { "I32", 1, 4, false },
    [KS_QUANT_I64] = { "I64", 1, 8, false },
    [KS_QUANT_F64] = { "F64", 1, 8, false },
    [KS_QUANT_IQ1_M] = { "IQ1_M", 256, 56, false },
    [KS_QUANT_BF16] = { "BF16", 1, 2, true },
    [KS_QUANT_TQ1_0] = { "TQ1_0", 256, 54, false },
    [KS_QUANT_TQ2_0] = { "TQ2_0", 256, 66, false },
    [KS_QUANT_MXFP4] = { "MXFP4", 32, 17, false },
};

const ks_qtype_info *
ks_qtype_get(uint32_t t)
{
    if (t >= KS_QUANT_COUNT || !table[t].name)
        return NULL;
    return &table[t];
}

const char *
ks_qtype_name(uint32_t t)
{
    static _Thread_local char buf[32];
    const ks_qtype_info *i = ks_qtype_get(t);

    if (i)
        return i->name;
    snprintf(buf, sizeof buf, "type %u", t);
    return buf;
}

uint64_t
ks_qtype_row_bytes(ks_qtype t, uint64_t n_elems)
{
    const ks_qtype_info *i = ks_qtype_get(t);

    return n_elems / i->block_elems * i->block_bytes;
}
