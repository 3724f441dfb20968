/* Run-time dispatch of the CPU kernels. On first use the scalar table is
 * built, then each SIMD path the CPU offers (on x86-64 from CPUID and the
 * OS's XSAVE state: AVX2+FMA+F16C, then AVX-VNNI, then AVX-512
 * F/BW/VL/VNNI; on aarch64 NEON, with sdot and smmla where HWCAP says so)
 * gets a table of its own, the scalar entries overwritten where it
 * implements them, and the best is used; KESTREL_SIMD names another.
 * Every public kernel of quant.h goes through the chosen table. */
#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/quant_priv.h"

static ks_quant_ops ops_by_simd[KS_SIMD_COUNT];
static bool have_simd[KS_SIMD_COUNT];
static const ks_quant_ops *active;
static ks_simd active_simd;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
/* CPUID leaf 1, ECX bit 29; clang 14 knows no "f16c" for
 * __builtin_cpu_supports. */
static bool
has_f16c(void)
{
    unsigned a, b, c, d;

    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

/* The register state the OS saves (XCR0), or 0 without OSXSAVE (CPUID
 * leaf 1, ECX bit 27): bits 1-2 SSE/AVX, 5-7 the AVX-512 opmask and
 * upper ZMM state (Intel SDM vol. 1, 13.3). */
static uint64_t
xcr0(void)
{
    unsigned a, b, c, d, lo, hi;

    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
        return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* CPUID leaf 7: subleaf 0 EBX bits 16 (AVX512F), 30 (BW), 31 (VL), ECX
 * bit 11 (AVX512_VNNI); subleaf 1 EAX bit 4 (AVX-VNNI). */
static bool
has_avx512(void)
{
    unsigned a, b, c, d;

    if ((xcr0() & 0xe6) != 0xe6 || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return false;
    return (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31)) && (c & (1u << 11));
}

static bool
has_avxvnni(void)
{
    unsigned a, b, c, d;

    if ((xcr0() & 0x6) != 0x6 || !__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return false;
    return a & (1u << 4);
}
#endif

#if defined(__aarch64__)
/* Linux's arm64 hwcaps (arch/arm64/include/uapi/asm/hwcap.h), for C
 * libraries whose headers predate them. */
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1UL << 13)
#endif

/* Advanced SIMD is part of every aarch64 CPU; each further level builds
 * on the one below, as llama.cpp's ggml_arm_arch_features does from the
 * same bits. */
static void
init_neon(void)
{
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);

    ops_by_simd[KS_SIMD_NEON] = ops_by_simd[KS_SIMD_SCALAR];
    ks_quant_ops_neon(&ops_by_simd[KS_SIMD_NEON]);
    have_simd[KS_SIMD_NEON] = true;
    if (!(hw & HWCAP_ASIMDDP))
        return;
    ops_by_simd[KS_SIMD_NEON_DOTPROD] = ops_by_simd[KS_SIMD_NEON];
    ks_quant_ops_neon_dot(&ops_by_simd[KS_SIMD_NEON_DOTPROD]);
    have_simd[KS_SIMD_NEON_DOTPROD] = true;
    if (!(hw2 & HWCAP2_I8MM))
        return;
    ops_by_simd[KS_SIMD_NEON_I8MM] = ops_by_simd[KS_SIMD_NEON];
    ks_quant_ops_neon_i8mm(&ops_by_simd[KS_SIMD_NEON_I8MM]);
    have_simd[KS_SIMD_NEON_I8MM] = true;
}
#endif

static void
init_tables(void)
{
    const char *env = getenv("KESTREL_SIMD");
    ks_simd pick = KS_SIMD_SCALAR;

    ks_quant_ops_scalar(&ops_by_simd[KS_SIMD_SCALAR]);
    have_simd[KS_SIMD_SCALAR] = true;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        has_f16c()) {
        ops_by_simd[KS_SIMD_AVX2] = ops_by_simd[KS_SIMD_SCALAR];
        ks_quant_ops_avx2(&ops_by_simd[KS_SIMD_AVX2]);
        have_simd[KS_SIMD_AVX2] = true;
        pick = KS_SIMD_AVX2;
        if (has_avxvnni()) {
            ops_by_simd[KS_SIMD_AVXVNNI] = ops_by_simd[KS_SIMD_SCALAR];
            ks_quant_ops_avxvnni(&ops_by_simd[KS_SIMD_AVXVNNI]);
            have_simd[KS_SIMD_AVXVNNI] = true;
            pick = KS_SIMD_AVXVNNI;
        }
        if (has_avx512()) {
            ops_by_simd[KS_SIMD_AVX512] = ops_by_simd[KS_SIMD_SCALAR];
            ks_quant_ops_avx512(&ops_by_simd[KS_SIMD_AVX512]);
            have_simd[KS_SIMD_AVX512] = true;
            pick = KS_SIMD_AVX512;
        }
    }
#elif defined(__aarch64__)
    init_neon();
    for (pick = KS_SIMD_NEON_I8MM; !have_simd[pick]; pick--)
        ;
#endif
    if (env && *env) {
        ks_simd want = KS_SIMD_SCALAR;
        bool known = false;
        for (int s = 0; s < KS_SIMD_COUNT; s++)
            if (!strcmp(env, ks_cpu_simd_name((ks_simd)s))) {
                want = (ks_simd)s;
                known = true;
            }
        if (!known) {
            ks_log(KS_LOG_WARN, "cpu",
                   "KESTREL_SIMD=%s is not scalar, avx2, avxvnni, avx512, neon, "
                   "neon-dotprod or neon-i8mm; using %s", env, ks_cpu_simd_name(pick));
        } else if (!have_simd[want]) {
            ks_log(KS_LOG_WARN, "cpu",
                   "KESTREL_SIMD=%s: this CPU lacks it; using scalar", env);
            pick = KS_SIMD_SCALAR;
        } else {
            pick = want;
        }
    }
    active_simd = pick;
    active = &ops_by_simd[pick];
    ks_log(KS_LOG_DEBUG, "cpu", "quant kernels: %s", ks_cpu_simd_name(pick));
}

static inline const ks_quant_ops *
ops(void)
{
    pthread_once(&once, init_tables);
    return active;
}

ks_simd
ks_cpu_simd(void)
{
    ops();
    return active_simd;
}

void
ks_cpu_simd_force(ks_simd s)
{
    ops();
    if ((unsigned)s >= KS_SIMD_COUNT || !have_simd[s])
        s = KS_SIMD_SCALAR;
    active_simd = s;
    active = &ops_by_simd[s];
}

bool
ks_cpu_simd_available(ks_simd s)
{
    ops();
    return (unsigned)s < KS_SIMD_COUNT && have_simd[s];
}

bool
ks_cpu_simd_x86(void)
{
    ks_simd s = ks_cpu_simd();

    return s == KS_SIMD_AVX2 || s == KS_SIMD_AVXVNNI || s == KS_SIMD_AVX512;
}

const char *
ks_cpu_simd_name(ks_simd s)
{
    switch (s) {
    case KS_SIMD_SCALAR: return "scalar";
    case KS_SIMD_AVX2:   return "avx2";
    case KS_SIMD_NEON:   return "neon";
    case KS_SIMD_NEON_DOTPROD: return "neon-dotprod";
    case KS_SIMD_NEON_I8MM:    return "neon-i8mm";
    case KS_SIMD_AVXVNNI: return "avxvnni";
    case KS_SIMD_AVX512: return "avx512";
    case KS_SIMD_COUNT:  break;
    }
    return "unknown";
}

ks_qtype
ks_cpu_act_type(ks_qtype w)
{
    switch (w) {
    case KS_QUANT_F32:
    case KS_QUANT_F16:
    case KS_QUANT_BF16:
        return w;
    case KS_QUANT_Q4_1:
    case KS_QUANT_Q5_1:
        return KS_QUANT_Q8_1;
    case KS_QUANT_Q2_K:
    case KS_QUANT_Q3_K:
    case KS_QUANT_Q4_K:
    case KS_QUANT_Q5_K:
    case KS_QUANT_Q6_K:
        return KS_QUANT_Q8_K;
    default:
        return KS_QUANT_Q8_0;
    }
}

uint64_t
ks_cpu_act_bytes(ks_qtype w, uint64_t n)
{
    return ks_qtype_row_bytes(ks_cpu_act_type(w), n);
}

void
ks_cpu_quantize_act(ks_qtype w, const float *x, void *xq, uint64_t n)
{
    ops()->quant_act[ks_cpu_act_type(w)](x, xq, n);
}

/* The path llama.cpp takes (quant_priv.h), in its order of precedence:
 * the tiled K-quant kernel (8 or more tokens, weights not repacked),
 * repacked weights, llamafile's sgemm for several tokens, vec_dot. */
ks_cpu_path
ks_cpu_matmul_path(ks_qtype w, uint64_t n, int64_t ne1, int64_t n_tok, int64_t tok_index)
{
    switch (w) {
    case KS_QUANT_F32:
    case KS_QUANT_F16:
    case KS_QUANT_BF16:
        if (n_tok >= 2 && n % 8 == 0 && ne1 % 4 == 0)
            return KS_CPU_PATH_BLAS;
        break;
    case KS_QUANT_Q4_0:
    case KS_QUANT_IQ4_NL:
    case KS_QUANT_Q4_K:
        if (ne1 % 8 == 0)
            return tok_index < n_tok / 4 * 4 ? KS_CPU_PATH_GEMM : KS_CPU_PATH_GEMV;
        if (w == KS_QUANT_IQ4_NL && n_tok >= 2)
            return KS_CPU_PATH_BLAS;
        if (w == KS_QUANT_Q4_K && n_tok >= 8)
            return KS_CPU_PATH_TILED;
        break;
    case KS_QUANT_Q2_K:
    case KS_QUANT_Q3_K:
    case KS_QUANT_Q5_K:
    case KS_QUANT_Q6_K:
        if (n_tok >= 8)
            return KS_CPU_PATH_TILED;
        break;
    default:
        break;
    }
    return KS_CPU_PATH_VD;
}

/* Runs of activation rows that take the same path go to that path's
 * kernel in one call (a lone vec_dot row to the matvec). */
void
ks_cpu_matmul_rows(ks_qtype w, const void *W, uint64_t row_bytes, uint64_t n,
                   int64_t ne1, int64_t n_rows, const void *xq,
                   uint64_t xq_stride, int64_t n_tok, float *y, uint64_t ldy)
{
    const ks_quant_ops *o = ops();

    if (n_rows <= 0 || n_tok <= 0)
        return;
    for (int64_t t0 = 0, t1; t0 < n_tok; t0 = t1) {
        ks_cpu_path p = ks_cpu_matmul_path(w, n, ne1, n_tok, t0);
        const void *x = (const uint8_t *)xq + (uint64_t)t0 * xq_stride;
        float *yt = y + (uint64_t)t0 * ldy;
        ks_matmul_fn fn;

        for (t1 = t0 + 1; t1 < n_tok && ks_cpu_matmul_path(w, n, ne1, n_tok, t1) == p; t1++)
            ;
        switch (p) {
        case KS_CPU_PATH_BLAS:  fn = o->mm_blas[w]; break;
        case KS_CPU_PATH_GEMV:  fn = o->mm_gemv[w]; break;
        case KS_CPU_PATH_GEMM:  fn = o->mm_gemm[w]; break;
        case KS_CPU_PATH_TILED: fn = o->mm_tiled[w]; break;
        default:                fn = o->matmul[w]; break;
        }
        if (p == KS_CPU_PATH_VD && n_tok == 1)
            o->matvec[w](W, row_bytes, n, n_rows, x, yt);
        else
            fn(W, row_bytes, n, n_rows, x, xq_stride, t1 - t0, yt, ldy);
    }
}

void
ks_cpu_matmul_rows_as_one(ks_qtype w, const void *W, uint64_t row_bytes, uint64_t n,
                          int64_t ne1, int64_t n_rows, const void *xq, uint64_t xq_stride,
                          int64_t n_tok, float *y, uint64_t ldy)
{
    const ks_quant_ops *o = ops();
    ks_matmul_fn fn;

    if (n_rows <= 0 || n_tok <= 0)
        return;
    switch (ks_cpu_matmul_path(w, n, ne1, 1, 0)) {
    case KS_CPU_PATH_GEMV: fn = o->mm_gemv[w]; break;
    case KS_CPU_PATH_VD:   fn = o->matmul[w]; break;
    default:  /* no one-token product takes another path; be safe */
        for (int64_t t = 0; t < n_tok; t++)
            ks_cpu_matmul_rows(w, W, row_bytes, n, ne1, n_rows,
                               (const uint8_t *)xq + (uint64_t)t * xq_stride, xq_stride, 1,
                               y + (uint64_t)t * ldy, ldy);
        return;
    }
    if (n_tok == 1 && ks_cpu_matmul_path(w, n, ne1, 1, 0) == KS_CPU_PATH_VD)
        o->matvec[w](W, row_bytes, n, n_rows, xq, y);
    else
        fn(W, row_bytes, n, n_rows, xq, xq_stride, n_tok, y, ldy);
}

void
ks_cpu_matvec(ks_qtype w, const void *W, uint64_t row_bytes, uint64_t n,
              int64_t n_rows, const void *xq, float *y)
{
    ks_cpu_matmul_rows(w, W, row_bytes, n, n_rows, n_rows, xq, 0, 1, y, 0);
}

void
ks_cpu_matmul(ks_qtype w, const void *W, uint64_t row_bytes, uint64_t n,
              int64_t n_rows, const void *xq, uint64_t xq_stride,
              int64_t n_tok, float *y, uint64_t ldy)
{
    ks_cpu_matmul_rows(w, W, row_bytes, n, n_rows, n_rows, xq, xq_stride,
                       n_tok, y, ldy);
}

void
ks_cpu_swiglu(float *g, const float *u, uint64_t row_len, uint64_t c0,
              uint64_t c1)
{
    uint64_t nv = row_len / 8 * 8, cv = c1 < nv ? c1 : nv;

    if (c0 < cv)
        ops()->silu_mul(g + c0, u + c0, cv - c0);
    for (uint64_t c = c0 > nv ? c0 : nv; c < c1; c++)
        g[c] = g[c] / (1.0f + expf(-g[c])) * u[c];
}

/* One entry per fp16 value, as GCC built llama.cpp's table (its
 * 1 + a*x*x fused into one multiply-add), plus the padding that lets a
 * 32-bit gather read the last entry. */
static uint16_t gelu_tab[(1 << 16) + 2];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void
gelu_init(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++) {
        float xh = ks_h2f((uint16_t)h);
        float y = 0.5f * xh *
                  (1.0f + tanhf(0.79788456080286535588f * xh *
                                fmaf(0.044715f * xh, xh, 1.0f)));
        gelu_tab[h] = ks_f2h(y);
    }
}

const uint16_t *
ks_gelu_table(void)
{
    pthread_once(&gelu_once, gelu_init);
    return gelu_tab;
}

void
ks_cpu_gelu_mul(float *g, const float *u, uint64_t n)
{
    ops()->gelu_mul(g, u, n);
}

void
ks_cpu_dequant_row(ks_qtype t, const void *src, float *dst, uint64_t n)
{
    ops()->dequant[t](src, dst, n);
}
