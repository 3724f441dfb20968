/* KS_QBLOCK_LIST (qblock.h) as an array indexed by ggml_type number. */
#include "driver/qblock.h"

#include <stddef.h>

#define ROW(n, id, elems, bytes) [id] = { #n, elems, bytes },
const ks_qblock ks_qblocks[KS_QBLOCK_COUNT] = { KS_QBLOCK_LIST(ROW) };
#undef ROW

const ks_qblock *
ks_qblock_get(uint32_t type)
{
    return type < KS_QBLOCK_COUNT && ks_qblocks[type].name ? &ks_qblocks[type] : NULL;
}
