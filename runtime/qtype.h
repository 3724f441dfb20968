/* Tensor element types as GGUF numbers them (the ggml_type enum), and the
 * geometry of each: elements and bytes per block, read from the one block
 * table in driver/qblock.h, and whether the CPU kernels take it. */
#ifndef KS_QTYPE_H
#define KS_QTYPE_H

#include <stdbool.h>
#include <stdint.h>

#include "driver/qblock.h"

/* KS_QUANT_<NAME> = its ggml_type number, one for each row of
 * KS_QBLOCK_LIST (driver/qblock.h): KS_QUANT_F32 = 0, KS_QUANT_F16 = 1,
 * KS_QUANT_Q4_0 = 2, ..., KS_QUANT_Q4_K = 12, ..., KS_QUANT_BF16 = 30. */
#define KS_QTYPE_ENUM(n, id, elems, bytes) KS_QUANT_##n = id,
typedef enum ks_qtype {
    KS_QBLOCK_LIST(KS_QTYPE_ENUM)
    KS_QUANT_COUNT = KS_QBLOCK_COUNT,
} ks_qtype;
#undef KS_QTYPE_ENUM

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
