/* The type table. A type is "cpu" when runtime/cpu has dequantize and dot
 * product kernels for it; any other known type opens in `kestrel info` but
 * a model using it is refused with the tensor's name. */
#include "qtype.h"

#include <stdio.h>

#define BIT(t) (1ull << (t))
/* The types with dequantize and dot product kernels in runtime/cpu. */
#define CPU_TYPES                                                             \
    (BIT(KS_QUANT_F32) | BIT(KS_QUANT_F16) | BIT(KS_QUANT_BF16) |            \
     BIT(KS_QUANT_Q4_0) | BIT(KS_QUANT_Q4_1) | BIT(KS_QUANT_Q5_0) |          \
     BIT(KS_QUANT_Q5_1) | BIT(KS_QUANT_Q8_0) | BIT(KS_QUANT_Q2_K) |          \
     BIT(KS_QUANT_Q3_K) | BIT(KS_QUANT_Q4_K) | BIT(KS_QUANT_Q5_K) |          \
     BIT(KS_QUANT_Q6_K) | BIT(KS_QUANT_IQ4_NL))

_Static_assert(KS_QUANT_COUNT <= 64, "CPU_TYPES is a 64-bit mask");

/* Geometry from driver/qblock.h's list, at compile time. */
#define ROW(n, id, elems, bytes) [id] = { #n, elems, bytes, (CPU_TYPES >> (id)) & 1u },
static const ks_qtype_info table[KS_QUANT_COUNT] = { KS_QBLOCK_LIST(ROW) };
#undef ROW

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
