/* Quantized matrix-vector products on Vulkan: y = W·x (+ bias) (+ residual)
 * for weight rows of any block type the CPU kernels handle (F32, F16,
 * BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL), f32 x and y,
 * for one vector or a batch of n_tok vectors per dispatch (each vector
 * reads W again: a batch saves dispatches and recording, not bandwidth).
 *
 * One GLSL template (shaders/matvec.comp) is compiled per (type, flags)
 * on first use and kept in the context until ks_vk_ctx_destroy. Types are
 * the ggml/GGUF type numbers (runtime/qtype.h's ks_qtype values); the
 * driver knows only their block geometry, not what the matrix is for.
 *
 * Usage: ks_vk_matvec_pipeline_get once per (type, flags) at set-up,
 * ks_vk_matvec_set once per binding of buffers (checked with
 * ks_vk_matvec_check), then ks_vk_matvec_record per dispatch; recording
 * allocates nothing. Threading as for the context (one thread at a time).
 * Internal; not installed. */
#ifndef KS_VK_MATVEC_H
#define KS_VK_MATVEC_H

#include <stdbool.h>
#include <stdint.h>

#include "driver/vk.h"

/* Variant flags. Rows at 16-byte multiples take the fastest kernel; the
 * ALIGN variants handle rows that start elsewhere (see
 * ks_vk_matvec_layout_flags). */
enum {
    KS_VK_MATVEC_BIAS = 1u << 0,      /* y = W·x + bias[b_off + row] */
    KS_VK_MATVEC_RESIDUAL = 1u << 1,  /* y = ... + residual[r_off + row]; the
                                       * residual buffer may be y itself */
    KS_VK_MATVEC_ALIGN4 = 1u << 2,    /* rows may start at any multiple of 4 bytes */
    KS_VK_MATVEC_ALIGN2 = 1u << 3,    /* rows may start at any even byte */
    /* Q4_1 and Q5_1 only: the min term of block b is m_w·xsum[s_off +
     * t·s_stride + b] (vector t) instead of m_w·Σ_j x_j, so that x
     * dequantized from Q8_1 (x_j = d·q_j, xsum = fp16(d·Σq)) gives what
     * llama.cpp's CPU computes on the Q8_1 blocks themselves. */
    KS_VK_MATVEC_XSUM = 1u << 4,
    KS_VK_MATVEC_N_FLAGS = 5u,
    KS_VK_MATVEC_FLAGS_ALL = (1u << KS_VK_MATVEC_N_FLAGS) - 1u,
};

/* Work split, as specialization constants: a workgroup of wg_size lanes is
 * wg_size / split slots; a slot's split lanes share ROWS rows, each lane
 * taking every split-th unit of columns and reusing its activations for
 * all the slot's rows. Zero fields take the defaults for the device: on
 * CPU-type devices (lavapipe) a workgroup of one subgroup (8 lanes), each
 * lane a slot of its own doing 8 rows; elsewhere 64 lanes, 16 per slot, 2 rows. */
typedef struct ks_vk_matvec_tune {
    uint32_t wg_size;  /* lanes per workgroup; 0: default */
    uint32_t rows;     /* rows per slot, 1..16; 0: default */
    uint32_t split;    /* lanes per slot: a power of two dividing wg_size;
                        * 0: default */
} ks_vk_matvec_tune;

typedef struct ks_vk_matvec {
    ks_vk_pipeline *pl;
    uint32_t qtype;          /* ggml type number */
    uint32_t flags;          /* KS_VK_MATVEC_* */
    uint32_t block_elems;
    uint32_t block_bytes;
    uint32_t unit_blocks;    /* blocks a lane decodes per loop trip */
    uint32_t wg_size;
    uint32_t rows;           /* rows per slot */
    uint32_t split;          /* lanes per slot */
    uint32_t rows_per_wg;
    uint32_t row_align;      /* 16, 4 or 2: what the flags allow */
    bool     sg_reduce;      /* a slot is one subgroup: subgroupAdd */
    uint32_t max_n_tok;      /* the device's maxComputeWorkGroupCount[2] */
    uint32_t n_buffers;      /* 3 + bias + residual + xsum */
    uint32_t n_views;        /* texel views made by ks_vk_matvec_set */
    VkBufferView *views;
} ks_vk_matvec;

/* One dispatch: for each vector t < n_tok, y_t = W·x_t (+ bias) (+ r_t),
 * where vector t of x, y and the residual starts |t·stride| floats after
 * its offset (the bias is per row, the same for every vector). Each vector
 * is computed exactly as a single-vector dispatch would (bit for bit).
 * The kernel addresses W with 32-bit byte offsets: the last row must end
 * below 4 GiB; vector offsets stay below 2^30 floats. */
typedef struct ks_vk_matvec_args {
    uint32_t rows;              /* >= 1 */
    uint32_t cols;              /* a multiple of the type's block size */
    uint64_t w_off_bytes;       /* row 0; even; see ks_vk_matvec_layout_flags */
    uint64_t row_stride_bytes;  /* >= the row's bytes; even */
    uint32_t x_off;             /* in floats, a multiple of 4 */
    uint32_t y_off;             /* in floats */
    uint32_t b_off;             /* in floats; with KS_VK_MATVEC_BIAS */
    uint32_t r_off;             /* in floats; with KS_VK_MATVEC_RESIDUAL */
    uint32_t n_tok;             /* vectors; 0 means 1; at most max_n_tok */
    uint32_t x_stride;          /* floats between vectors of x, a multiple of 4 */
    uint32_t y_stride;          /* floats between vectors of y; >= rows when
                                 * n_tok > 1 (outputs must not overlap) */
    uint32_t r_stride;          /* floats between vectors of the residual */
    uint32_t s_off;             /* floats; with KS_VK_MATVEC_XSUM: block b of */
    uint32_t s_stride;          /* vector t is xsum[s_off + t·s_stride + b] */
} ks_vk_matvec_args;

/* Buffers in binding order: W and x (read through RGBA32UI / RGBA32F texel
 * views, so they must have been made with texel-buffer usage, as
 * KS_VK_MEM_DEVICE and KS_VK_MEM_UPLOAD buffers are), y, then bias,
 * residual and xsum (f32 storage buffers) when the flags ask for them
 * (NULL otherwise). W is read in whole 16-byte texels: keep weight
 * buffers padded to 16 bytes. */
typedef struct ks_vk_matvec_bufs {
    const ks_vk_buffer *w;
    const ks_vk_buffer *x;
    const ks_vk_buffer *y;
    const ks_vk_buffer *bias;
    const ks_vk_buffer *residual;
    const ks_vk_buffer *xsum;     /* KS_VK_MATVEC_XSUM: per-block sums of x */
} ks_vk_matvec_bufs;

/* True when |qtype| has a decoder in shaders/common/quant.glsl. */
bool ks_vk_matvec_supports(uint32_t qtype);

/* The alignment flag rows at |w_off_bytes| + k·|row_stride_bytes| need:
 * 0 when they all start at multiples of 16 bytes, KS_VK_MATVEC_ALIGN4 for
 * multiples of 4, else KS_VK_MATVEC_ALIGN2. Pass row_stride 0 for one row. */
uint32_t ks_vk_matvec_layout_flags(uint64_t w_off_bytes, uint64_t row_stride_bytes);

/* The kernel for (|qtype|, |flags|) with the default tuning, made on first
 * use (SPIR-V through ks_vk_shader_get, so from the disk cache when it is
 * there), then kept in |ctx| (*out is borrowed until ks_vk_ctx_destroy).
 * Errors: KS_ERR_UNSUPPORTED (type without a decoder, or a build without
 * glslang and nothing cached), KS_ERR_INVALID_ARG (unknown flags,
 * KS_VK_MATVEC_XSUM with a type other than Q4_1/Q5_1, named), the
 * compiler's and Vulkan's errors. */
ks_status ks_vk_matvec_pipeline_get(ks_vk_ctx *ctx, uint32_t qtype, uint32_t flags,
                                    ks_vk_matvec **out);

/* An uncached kernel with explicit tuning (benchmarks, experiments); the
 * caller destroys it before the context. KS_ERR_INVALID_ARG names a bad
 * tuning field. */
ks_status ks_vk_matvec_create(ks_vk_ctx *ctx, uint32_t qtype, uint32_t flags,
                              const ks_vk_matvec_tune *tune, ks_vk_matvec **out);
void      ks_vk_matvec_destroy(ks_vk_ctx *ctx, ks_vk_matvec *mv);  /* NULL ok */

/* Allocates a descriptor set binding |b| (see ks_vk_matvec_bufs) from the
 * kernel's pool, with texel views of W and x (up to 512 sets per kernel,
 * freed with it). Set-up time only. KS_ERR_INVALID_ARG names a missing or
 * unexpected buffer; KS_ERR_UNSUPPORTED a buffer larger than a texel view
 * can cover. */
ks_status ks_vk_matvec_set(ks_vk_ctx *ctx, ks_vk_matvec *mv, const ks_vk_matvec_bufs *b,
                           VkDescriptorSet *out);

/* Checks |a| against the kernel (shape, alignment, strides, vector count,
 * loop bounds) and, when |b| is not NULL, every range against the
 * buffers' sizes, up to the last vector: W must cover the last row
 * rounded up to 16 bytes, x the last activation rounded up to 4 floats.
 * KS_ERR_INVALID_ARG names the field with the expected and found values;
 * KS_ERR_UNSUPPORTED when rows are too long for one lane's loop budget or
 * n_tok exceeds the device's workgroup count in z. */
ks_status ks_vk_matvec_check(const ks_vk_matvec *mv, const ks_vk_matvec_args *a,
                             const ks_vk_matvec_bufs *b);

/* Records one dispatch of |mv| on |set| into |cb| (push constants from |a|,
 * n_tok workgroups in z), after ks_vk_matvec_check(mv, a, NULL). No
 * barriers: the caller orders it with ks_vk_cmd_barrier. */
ks_status ks_vk_matvec_record(ks_vk_ctx *ctx, VkCommandBuffer cb, const ks_vk_matvec *mv,
                              VkDescriptorSet set, const ks_vk_matvec_args *a);

#endif
