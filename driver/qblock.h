/* Block geometry of every GGUF tensor type, by its ggml_type number: the
 * one table the runtime (runtime/qtype.c) and the Vulkan kernels
 * (driver/vk_exact.c, driver/vk_matvec.c) read. It lives in driver/ so
 * that the driver, which may not include runtime headers, sees it too.
 * Source: shared/reference/gguf-and-quants.md section 1 (ggml.h's
 * ggml_type and ggml.c's type_traits). Internal; not installed. */
#ifndef KS_QBLOCK_H
#define KS_QBLOCK_H

#include <stdint.h>

/* X(NAME, ggml_type number, elements per block, bytes per block), one row
 * a type; ids missing here were removed from ggml and are unknown. */
#define KS_QBLOCK_LIST(X)        \
    X(F32, 0, 1, 4)              \
    X(F16, 1, 1, 2)              \
    X(Q4_0, 2, 32, 18)           \
    X(Q4_1, 3, 32, 20)           \
    X(Q5_0, 6, 32, 22)           \
    X(Q5_1, 7, 32, 24)           \
    X(Q8_0, 8, 32, 34)           \
    X(Q8_1, 9, 32, 36)           \
    X(Q2_K, 10, 256, 84)         \
    X(Q3_K, 11, 256, 110)        \
    X(Q4_K, 12, 256, 144)        \
    X(Q5_K, 13, 256, 176)        \
    X(Q6_K, 14, 256, 210)        \
    X(Q8_K, 15, 256, 292)        \
    X(IQ2_XXS, 16, 256, 66)      \
    X(IQ2_XS, 17, 256, 74)       \
    X(IQ3_XXS, 18, 256, 98)      \
    X(IQ1_S, 19, 256, 50)        \
    X(IQ4_NL, 20, 32, 18)        \
    X(IQ3_S, 21, 256, 110)       \
    X(IQ2_S, 22, 256, 82)        \
    X(IQ4_XS, 23, 256, 136)      \
    X(I8, 24, 1, 1)              \
    X(I16, 25, 1, 2)             \
    X(I32, 26, 1, 4)             \
    X(I64, 27, 1, 8)             \
    X(F64, 28, 1, 8)             \
    X(IQ1_M, 29, 256, 56)        \
    X(BF16, 30, 1, 2)            \
    X(TQ1_0, 34, 256, 54)        \
    X(TQ2_0, 35, 256, 66)        \
    X(MXFP4, 39, 32, 17)

/* KS_QBLOCK_<NAME> = its ggml_type number (the runtime's KS_QUANT_<NAME>). */
#define KS_QBLOCK_ENUM(n, id, elems, bytes) KS_QBLOCK_##n = id,
enum ks_qblock_id { KS_QBLOCK_LIST(KS_QBLOCK_ENUM) };
#undef KS_QBLOCK_ENUM

/* One more than the largest ggml_type number in the list. */
#define KS_QBLOCK_COUNT 40u

typedef struct ks_qblock {
    const char *name;        /* "Q4_K"; NULL for ids not in the list */
    uint32_t    block_elems; /* elements per block (1 for plain types) */
    uint32_t    block_bytes; /* bytes per block */
} ks_qblock;

/* KS_QBLOCK_LIST as an array indexed by ggml_type number. */
extern const ks_qblock ks_qblocks[KS_QBLOCK_COUNT];

/* NULL when |type| is not in the list. */
const ks_qblock *ks_qblock_get(uint32_t type);

#endif
