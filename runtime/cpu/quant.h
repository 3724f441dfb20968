/* CPU kernels for every supported tensor type: fp16/bf16 conversion,
 * dequantization, activation quantization, and fused quantized dot
 * products for matrix-vector (decode) and matrix-matrix (prefill).
 *
 * Kernels are single-threaded; callers split rows across the thread pool
 * and call them on disjoint row ranges. A scalar reference path and SIMD
 * paths (AVX2/FMA, AVX-VNNI and AVX-512 on x86-64; NEON, NEON with sdot and
 * NEON with smmla on aarch64) sit behind one dispatch chosen at run time
 * from CPUID (x86-64) or HWCAP (aarch64), overridable with KESTREL_SIMD
 * (ks_simd below). */
#ifndef KS_CPU_QUANT_H
#define KS_CPU_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/qtype.h"

float    ks_fp16_to_f32(uint16_t h);
uint16_t ks_f32_to_fp16(float f);   /* round to nearest even */
float    ks_bf16_to_f32(uint16_t h);
uint16_t ks_f32_to_bf16(float f);   /* round to nearest even */

/* x86-64 levels each hold the one before: AVX2 (+FMA, F16C); AVX-VNNI
 * (256-bit vpdpbusd); AVX-512 (F, BW, VL and VNNI: vpdpbusd, 512-bit
 * integer products). Every x86 level gives the same bits as scalar. */
typedef enum ks_simd {
    KS_SIMD_SCALAR = 0,
    KS_SIMD_AVX2,
    KS_SIMD_NEON,
    KS_SIMD_NEON_DOTPROD,  /* NEON with sdot (HWCAP_ASIMDDP) */
    KS_SIMD_NEON_I8MM,     /* and smmla (HWCAP2_I8MM) */
    KS_SIMD_AVXVNNI,
    KS_SIMD_AVX512,
    KS_SIMD_COUNT
} ks_simd;

/* The path in use: the best the CPU and the OS (XSAVE state) offer,
 * unless KESTREL_SIMD=scalar|avx2|avxvnni|avx512|neon names another (an
 * unavailable one falls back to scalar with a warning; naming a lower x86
 * level caps it there). */
ks_simd     ks_cpu_simd(void);
void        ks_cpu_simd_force(ks_simd s);  /* tests; not thread safe */
bool        ks_cpu_simd_available(ks_simd s);
const char *ks_cpu_simd_name(ks_simd s);
/* Whether the path in use has AVX2, FMA and F16C (every x86 level). */
bool        ks_cpu_simd_x86(void);

/* The format activations take for a dot product with weights of type |w|
 * (as llama.cpp does, so results track it): F32 for F32, F16 for F16,
 * BF16 for BF16, Q8_K for K-quants, Q8_1 for Q4_1/Q5_1, Q8_0 for the
 * other 32-element types. */
ks_qtype ks_cpu_act_type(ks_qtype w);
/* Bytes of one activation row of |n| elements in that format. */
uint64_t ks_cpu_act_bytes(ks_qtype w, uint64_t n);
/* Quantizes one activation row; |n| is a multiple of |w|'s block size. */
void     ks_cpu_quantize_act(ks_qtype w, const float *x, void *xq, uint64_t n);

/* y[r] = dot(row r of W, x) for r in [0, n_rows). Rows of |n| elements are
 * |row_bytes| apart; |xq| comes from ks_cpu_quantize_act(w, ...). */
void ks_cpu_matvec(ks_qtype w, const void *W, uint64_t row_bytes, uint64_t n,
                   int64_t n_rows, const void *xq, float *y);

/* y[t * ldy + r] = dot(row r of W, activation row t) for t < n_tok,
 * r < n_rows; activation rows are |xq_stride| bytes apart. Reads each
 * weight row once for all n_tok activations. Both this and
 * ks_cpu_matvec sum as ks_cpu_matmul_rows does for a matrix of n_rows
 * rows. */
void ks_cpu_matmul(ks_qtype w, const void *W, uint64_t row_bytes, uint64_t n,
                   int64_t n_rows, const void *xq, uint64_t xq_stride,
                   int64_t n_tok, float *y, uint64_t ldy);

/* ks_cpu_matmul for rows of a weight matrix that has |ne1| rows in all
 * (W points at the first of the |n_rows| rows wanted; y gets those rows
 * only), summed exactly as llama.cpp's CPU backend (x86-64 AVX2 build)
 * sums the same product: its path depends on the type, the matrix's row
 * count and the number of activation rows (n_tok): vec_dot for one
 * token, llamafile's sgemm for several (F32/F16/BF16 with n % 8 == 0 and
 * ne1 % 4 == 0, the 32-element types but Q4_1/Q5_1), the repacked 8-row
 * kernels for Q4_0, IQ4_NL and Q4_K with ne1 % 8 == 0 (GEMM for the
 * first n_tok / 4 * 4 activation rows, GEMV for the rest), its tiled
 * kernel for other K-quant products of 8 or more tokens. Results are
 * bit-identical on the scalar and the SIMD path. Not emulated: weights
 * llama.cpp keeps unpacked although their shape allows repacking (a
 * Q4_0/Q4_K output matrix tied to the token embeddings) and the paths of
 * other builds (AVX-512, VNNI, ARM). */
void ks_cpu_matmul_rows(ks_qtype w, const void *W, uint64_t row_bytes,
                        uint64_t n, int64_t ne1, int64_t n_rows,
                        const void *xq, uint64_t xq_stride, int64_t n_tok,
                        float *y, uint64_t ldy);

/* As ks_cpu_matmul_rows, with every activation row taking the kernel a
 * product of that row alone takes (n_tok 1), which sums each (row, token)
 * alone: token t's results are bitwise those of a one-token product,
 * while a weight block is loaded once for all n_tok. For verifying
 * drafted tokens (speculative decoding). */
void ks_cpu_matmul_rows_as_one(ks_qtype w, const void *W, uint64_t row_bytes,
                               uint64_t n, int64_t ne1, int64_t n_rows,
                               const void *xq, uint64_t xq_stride, int64_t n_tok,
                               float *y, uint64_t ldy);

/* The summation order ks_cpu_matmul_rows uses for one activation row
 * (quant_priv.h describes each):
 *   VD     the type's vec_dot (one token, or several where llamafile's
 *          sgemm sums in the same order);
 *   BLAS   llamafile's tinyBLAS order: F32/F16/BF16 (n % 8 == 0, ne1 % 4
 *          == 0, two or more tokens) and IQ4_NL (ne1 % 8 != 0, two or
 *          more tokens);
 *   GEMV   the repacked 8-row GEMV (Q4_0, IQ4_NL, Q4_K with ne1 % 8 ==
 *          0): activation rows from n_tok / 4 * 4 on;
 *   GEMM   the repacked GEMM: the first n_tok / 4 * 4 activation rows
 *          (for Q4_0 and IQ4_NL the same sums as GEMV);
 *   TILED  the tiled K-quant kernel: 8 or more tokens, weights not
 *          repacked. */
typedef enum ks_cpu_path {
    KS_CPU_PATH_VD = 0,
    KS_CPU_PATH_BLAS,
    KS_CPU_PATH_GEMV,
    KS_CPU_PATH_GEMM,
    KS_CPU_PATH_TILED,
} ks_cpu_path;

/* The path ks_cpu_matmul_rows takes for activation row |tok_index| (0 <=
 * tok_index < n_tok) of a product of |n_tok| rows with a weight matrix of
 * type |w| that has |ne1| rows of |n| elements. Pure; thread safe. */
ks_cpu_path ks_cpu_matmul_path(ks_qtype w, uint64_t n, int64_t ne1, int64_t n_tok,
                               int64_t tok_index);

/* g[c] = silu(g[c]) * u[c] for the columns c0 <= c < c1 of one row of
 * |row_len| values (g and u point at the row's start), as llama.cpp's
 * ggml_vec_swiglu_f32 computes it: through its AVX2 exponential for the
 * columns below row_len / 8 * 8, through expf for the rest. */
void ks_cpu_swiglu(float *g, const float *u, uint64_t row_len, uint64_t c0,
                   uint64_t c1);

/* g[i] = gelu(g[i]) * u[i] for i < n, as llama.cpp's CPU backend
 * computes GELU: 0 at or below -10, x at or above 10, in between the
 * fp16 result its table holds for the fp16 value of x (the table is
 * built on first use, about a millisecond). */
void ks_cpu_gelu_mul(float *g, const float *u, uint64_t n);

/* Dequantizes one row of |n| elements to f32. */
void ks_cpu_dequant_row(ks_qtype t, const void *src, float *dst, uint64_t n);

/* Weight quantization from f32 (the GGUF writer and `kestrel quantize`). */
bool ks_cpu_can_quantize(ks_qtype t);
void ks_cpu_quantize_row(ks_qtype t, const float *src, void *dst, uint64_t n);

#endif
