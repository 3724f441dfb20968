/* The bit-exact matrix kernel on Vulkan: y = W·x (+ bias) (+ residual)
 * computed with exactly the float operations, in the same order, that the
 * CPU backend's ks_cpu_matmul_rows (runtime/cpu/quant.c) performs for the
 * same weights and activations, so that a Vulkan forward pass gives the
 * CPU's results bit for bit. Slower than vk_matvec.h's kernels (one
 * invocation walks a whole row); use it where results must match the CPU.
 *
 * Weight types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K,
 * IQ4_NL, as ggml/GGUF type numbers (runtime/qtype.h's ks_qtype values).
 * Activations are not f32: they are the CPU's quantized activation rows
 * (F32, F16, BF16, Q8_0, Q8_1 or Q8_K by weight type, as
 * ks_cpu_act_type says) in a packed layout of 32-bit words per row:
 *   Q8_0 / Q8_1 (32 elements): 10 words per block: d as float bits (the
 *     block's fp16 d converted), s as float bits (Q8_1's fp16 s
 *     converted; 0 for Q8_0), then the 32 int8 quants, quant j in byte
 *     j % 4 of word 2 + j / 4;
 *   Q8_K (256 elements): 73 words: d (float bits), 256 int8 quants in
 *     words 1..64, the 16 int16 bsums in words 65..72 (bsum 2k in the
 *     low half of word 65 + k);
 *   F16 / BF16: two halves per word (element 2k in the low half);
 *   F32: one float per word.
 *
 * The summation path: the CPU sums differently by weight type, matrix
 * shape and batch size (vec_dot, llamafile's tinyBLAS, the repacked
 * GEMV/GEMM, the tiled K-quant kernel); ks_cpu_matmul_path
 * (runtime/cpu/quant.h) says which path it takes for each activation row.
 * The driver knows nothing above itself, so the caller passes those paths
 * in the args: for a dispatch of tokens tok0..tok0+n_tok-1 of a CPU batch
 * of n_batch tokens and a matrix of ne1 rows,
 *   path      = ks_cpu_matmul_path(w, cols, ne1, n_batch, tok0),
 *   n_first   = how many of the dispatch's tokens take that path,
 *   path_rest = the path of the others (GEMM first, then GEMV, is the
 *               only mixed case).
 *
 * Usage: ks_vk_exact_get once per (type, flags) at set-up, ks_vk_exact_set
 * once per binding of buffers, ks_vk_exact_check then
 * ks_vk_exact_record per dispatch (recording allocates nothing). The
 * first ks_vk_exact_get of a context runs a small probe dispatch to learn
 * whether the device's fma() rounds once (lavapipe's does not; there the
 * kernels emulate it in double precision). Threading as for the context.
 * Internal; not installed. */
#ifndef KS_VK_EXACT_H
#define KS_VK_EXACT_H

#include <stdbool.h>
#include <stdint.h>

#include "driver/vk.h"

/* Variant flags. */
enum {
    KS_VK_EXACT_BIAS = 1u << 0,      /* y = W·x + bias[b_off + row] */
    KS_VK_EXACT_RESIDUAL = 1u << 1,  /* then y = y + r[r_off + t·r_stride + row];
                                      * the residual buffer may be y itself */
    KS_VK_EXACT_EXPERT = 1u << 2,    /* mixture of experts: token t's matrix is
                                      * expert ids[e_off + t] of a 3-D weight,
                                      * its activation row t / e_div */
    KS_VK_EXACT_FLAGS_ALL = (1u << 3) - 1u,
};

/* Summation paths, with the values of runtime/cpu/quant.h's ks_cpu_path. */
enum {
    KS_VK_EXACT_PATH_VD = 0,     /* vec_dot (all types) */
    KS_VK_EXACT_PATH_BLAS = 1,   /* tinyBLAS: F32/F16/BF16 (cols % 8 == 0), IQ4_NL */
    KS_VK_EXACT_PATH_GEMV = 2,   /* repacked GEMV: Q4_0, IQ4_NL, Q4_K */
    KS_VK_EXACT_PATH_GEMM = 3,   /* repacked GEMM: Q4_0, IQ4_NL, Q4_K */
    KS_VK_EXACT_PATH_TILED = 4,  /* tiled K-quant GEMM: Q2_K..Q6_K */
};

typedef struct ks_vk_exact {
    ks_vk_pipeline *pl;
    uint32_t qtype;        /* ggml type number */
    uint32_t flags;        /* KS_VK_EXACT_* */
    uint32_t block_elems;
    uint32_t block_bytes;
    uint32_t unit_blocks;  /* blocks per loop trip of the shader */
    uint32_t wg_size;      /* invocations per workgroup */
    uint32_t max_reps;     /* rows per invocation, at most (1 on GPUs) */
    uint32_t max_n_tok;    /* the device's maxComputeWorkGroupCount[2] */
    bool     fma_emu;      /* fma() emulated in double precision */
    bool     f64;          /* double-precision tails (F16/BF16 vec_dot, cols % 32 != 0) */
    uint32_t n_buffers;    /* 3 + bias + residual */
    uint32_t n_views;      /* texel views made by ks_vk_exact_set */
    VkBufferView *views;
} ks_vk_exact;

/* One dispatch: for each token t < n_tok, y_t = W·x_t (+ bias) (+ r_t);
 * token t's activation row starts x_off_words + t·x_stride_words words
 * into x, its outputs y_off + t·y_stride floats into y, its residual
 * r_off + t·r_stride floats into the residual buffer. W is addressed with
 * 32-bit byte offsets (the last row must end below 4 GiB). */
typedef struct ks_vk_exact_args {
    uint32_t rows;              /* >= 1 */
    uint32_t cols;              /* a multiple of the type's block size */
    uint64_t w_off_bytes;       /* row 0; even */
    uint64_t row_stride_bytes;  /* >= the row's bytes; even */
    uint32_t n_tok;             /* tokens; 0 means 1; at most the device's
                                 * workgroup count in z */
    uint32_t path;              /* KS_VK_EXACT_PATH_* of tokens [0, n_first) */
    uint32_t n_first;           /* 0: every token takes |path| */
    uint32_t path_rest;         /* of tokens [n_first, n_tok) */
    uint32_t x_off_words;
    uint32_t x_stride_words;    /* >= ks_vk_act_words(type, cols) when n_tok > 1 */
    uint32_t y_off;             /* floats */
    uint32_t y_stride;          /* floats; >= rows when n_tok > 1 */
    uint32_t b_off;             /* floats; with KS_VK_EXACT_BIAS */
    uint32_t r_off;             /* floats; with KS_VK_EXACT_RESIDUAL */
    uint32_t r_stride;          /* floats */
    /* KS_VK_EXACT_EXPERT: the weights are n_expert matrices of |rows|
     * rows, e_stride_bytes apart from w_off_bytes; ids outside
     * [0, n_expert) read expert 0 */
    uint32_t n_expert;
    uint64_t e_stride_bytes;
    uint32_t e_off;             /* entries into the ids buffer */
    uint32_t e_div;             /* tokens (choices) per activation row; 0 means 1 */
} ks_vk_exact_args;

/* Buffers in binding order: W (read through an RGBA32UI texel view: keep
 * weight buffers padded to 16 bytes) and x (an R32UI texel view); both
 * need texel-buffer usage, as KS_VK_MEM_DEVICE and KS_VK_MEM_UPLOAD
 * buffers have. y, bias and residual are f32 storage buffers, ids an
 * int32 one; bias, residual and ids only with their flags (NULL
 * otherwise). */
typedef struct ks_vk_exact_bufs {
    const ks_vk_buffer *w;
    const ks_vk_buffer *x;
    const ks_vk_buffer *y;
    const ks_vk_buffer *bias;
    const ks_vk_buffer *residual;
    const ks_vk_buffer *ids;    /* int32 expert ids, KS_VK_EXACT_EXPERT only */
} ks_vk_exact_bufs;

/* True when the kernel handles weights of type |qtype|. */
bool ks_vk_exact_supports(uint32_t qtype);

/* Words of one packed activation row of |n| elements for weights of type
 * |wtype| (the layout above); 0 for an unsupported type or an |n| that is
 * not a multiple of the activation block. */
uint32_t ks_vk_act_words(uint32_t wtype, uint32_t n);

/* Packs one CPU activation row (from ks_cpu_quantize_act(wtype, ...), |n|
 * elements) into ks_vk_act_words(wtype, n) words. Tests and uploads;
 * does nothing for an unsupported type. Thread safe. */
void ks_vk_act_from_cpu(uint32_t wtype, const void *cpu_row, uint32_t n, uint32_t *words);

/* The kernel for (|qtype|, |flags|), made on first use (SPIR-V through
 * ks_vk_shader_get, so from the disk cache when it is there) and kept in
 * |ctx| (*out is borrowed until ks_vk_ctx_destroy). Errors:
 * KS_ERR_UNSUPPORTED (a type without a kernel; a device whose fma()
 * rounds twice and that has no shaderFloat64; a build without glslang and
 * nothing cached), KS_ERR_INVALID_ARG (unknown flags), the compiler's and
 * Vulkan's errors. */
ks_status ks_vk_exact_get(ks_vk_ctx *ctx, uint32_t qtype, uint32_t flags,
                          ks_vk_exact **out);

/* Runs the fma probe (once per context; no kernel is made) and sets
 * *native when the device's fma() rounds once, as the exact kernels will
 * find it. Errors as ks_vk_exact_get's for a device without exact
 * kernels (KS_ERR_UNSUPPORTED). */
ks_status ks_vk_exact_fma(ks_vk_ctx *ctx, bool *native);

/* Allocates a descriptor set binding |b| from the kernel's pool, with
 * texel views of W and x (up to 512 sets per kernel, freed with it).
 * Set-up time only. KS_ERR_INVALID_ARG names a missing or unexpected
 * buffer; KS_ERR_UNSUPPORTED a buffer larger than a texel view covers. */
ks_status ks_vk_exact_set(ks_vk_ctx *ctx, ks_vk_exact *k, const ks_vk_exact_bufs *b,
                          VkDescriptorSet *out);

/* Checks |a| against the kernel (shape, alignment, paths the type has,
 * strides, token count, loop bounds) and, when |b| is not NULL, every
 * range against the buffers' sizes up to the last token: W must cover the
 * last row rounded up to 16 bytes. KS_ERR_INVALID_ARG names the field with
 * the expected and found values; KS_ERR_UNSUPPORTED for rows too long for
 * lavapipe's loop budget, too many tokens for one dispatch, or an
 * F16/BF16 vec_dot with cols % 32 != 0 on a device without
 * shaderFloat64. */
ks_status ks_vk_exact_check(const ks_vk_exact *k, const ks_vk_exact_args *a,
                            const ks_vk_exact_bufs *b);

/* Records one dispatch of |k| on |set| into |cb| after checking |a|
 * (ks_vk_exact_check(k, a, NULL)). No barriers: the caller orders it with
 * ks_vk_cmd_barrier. */
ks_status ks_vk_exact_record(ks_vk_ctx *ctx, VkCommandBuffer cb, const ks_vk_exact *k,
                             VkDescriptorSet set, const ks_vk_exact_args *a);

#endif
