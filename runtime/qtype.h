/* Tensor element types as GGUF numbers them (the ggml_type enum), and the
 * geometry of each: elements and bytes per block. Source:
 * shared/reference/gguf-and-quants.md section 1. */
#ifndef KS_QTYPE_H
#define KS_QTYPE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum ks_qtype {
    KS_QUANT_F32 = 0,
    KS_QUANT_F16 = 1,
    KS_QUANT_Q4_0 = 2,
    KS_QUANT_Q4_1 = 3,
    KS_QUANT_Q5_0 = 6,
    KS_QUANT_Q5_1 = 7,
    KS_QUANT_Q8_0 = 8,
    KS_QUANT_Q8_1 = 9,
    KS_QUANT_Q2_K = 10,
    KS_QUANT_Q3_K = 11,
    KS_QUANT_Q4_K = 12,
    KS_QUANT_Q5_K = 13,
    KS_QUANT_Q6_K = 14,
    KS_QUANT_Q8_K = 15,
    KS_QUANT_IQ2_XXS = 16,
    KS_QUANT_IQ2_XS = 17,
    KS_QUANT_IQ3_XXS = 18,
    KS_QUANT_IQ1_S = 19,
    KS_QUANT_IQ4_NL = 20,
    KS_QUANT_IQ3_S = 21,
    KS_QUANT_IQ2_S = 22,
    KS_QUANT_IQ4_XS = 23,
    KS_QUANT_I8 = 24,
    KS_QUANT_I16 = 25,
    KS_QUANT_I32 = 26,
    KS_QUANT_I64 = 27,
    KS_QUANT_F64 = 28,
    KS_QUANT_IQ1_M = 29,
    KS_QUANT_BF16 = 30,
    KS_QUANT_TQ1_0 = 34,
    KS_QUANT_TQ2_0 = 35,
    KS_QUANT_MXFP4 = 39,
    KS_QUANT_COUNT = 40,
} ks_qtype;

typedef struct ks_qtype_info {
    const char *name;       /* "Q4_K"; NULL for ids that no longer exist */
    uint32_t    block_elems; /* elements per block (1 for plain types) */
    uint32_t    block_bytes; /* bytes per block */
    bool        cpu;         /* the CPU kernels can compute with it */
} ks_qtype_info;

/* NULL when |t| is not a known type id (removed ids included). */
const ks_qtype_info *ks_qtype_get(uint32_t t);

/* "Q4_K", or "type 42" style text in a static buffer for unknown ids. */
const char *ks_qtype_name(uint32_t t);

/* Bytes of one row of |n_elems| elements; |n_elems| must be a multiple of
 * the block size (callers check with ks_qtype_get first). */
uint64_t ks_qtype_row_bytes(ks_qtype t, uint64_t n_elems);

#endif
