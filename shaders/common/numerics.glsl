/* Arithmetic helpers that reproduce, bit for bit, what Kestrel's CPU
 * kernels (and llama.cpp's) compute: fp16 and bf16 rounding done with
 * integer operations (so the result does not depend on how a driver
 * implements packHalf2x16), and the polynomial exp of ggml's vector code.
 * Everything here is `precise`: no driver may fuse or reorder it. */

/* f rounded to the nearest fp16 value (ties to even), back as a float;
 * overflow gives infinity, NaN stays NaN. */
float
ks_f16r(float f)
{
    uint u = floatBitsToUint(f);
    uint sgn = u & 0x80000000u;
    uint a = u & 0x7FFFFFFFu;

    if (a >= 0x7F800000u)
        return f;
    if (a >= 0x477FF000u)  /* 65520 and up round to infinity */
        return uintBitsToFloat(sgn | 0x7F800000u);
    if (a >= 0x38800000u) {  /* fp16 normal: keep 10 mantissa bits */
        uint r = (a + 0xFFFu + ((a >> 13) & 1u)) & 0xFFFFE000u;
        return uintBitsToFloat(sgn | r);
    }
    /* fp16 subnormal: multiples of 2^-24; both scalings are exact */
    precise float q = roundEven(uintBitsToFloat(a) * 16777216.0);
    precise float r = q * (1.0 / 16777216.0);
    return uintBitsToFloat(sgn | floatBitsToUint(r));
}

/* f rounded to the nearest bf16 value (ties to even). */
float
ks_bf16r(float f)
{
    uint u = floatBitsToUint(f);

    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return uintBitsToFloat(u | 0x00400000u);
    return uintBitsToFloat((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}

/* a*b + c rounded once, as C's fmaf and the CPU's fma instructions round
 * it. Vulkan lets fma() round like a multiply followed by an add (its
 * precision is inherited from OpFMul and OpFAdd), and lavapipe does split
 * it; so with KS_F64 it is computed in double precision: a*b is exact
 * there, s = a*b + c rounded and its error (TwoSum) give the exact sum,
 * and rounding that to odd in double, then to float, is the single
 * rounding (29 extra bits are more than round-to-odd needs). The same
 * emulation as exact.comp's KS_EXACT_FMA_EMU. A host that has checked
 * that the device's fma() rounds once may define KS_FMA_NATIVE. */
float
ks_fma(float a, float b, float c)
{
#if defined(KS_F64) && !defined(KS_FMA_NATIVE)
    precise double m = double(a) * double(b);
    precise double dc = double(c);
    precise double s = m + dc;
    precise double bb = s - m;
    precise double er = (m - (s - bb)) + (dc - bb);
    uvec2 w = unpackDouble2x32(s);

    if (abs(er) > 0.0LF && (w.x & 1u) == 0u) {
        if ((er > 0.0LF) == (s > 0.0LF)) {
            w.x += 1u;  /* even: no carry */
        } else {
            w.y -= w.x == 0u ? 1u : 0u;
            w.x -= 1u;
        }
    }
    precise float r = float(packDouble2x32(w));
    return r;
#else
    precise float r = fma(a, b, c);
    return r;
#endif
}

/* exp(x) as ggml_v_expf computes it (runtime/cpu/quant_priv.h). */
float
ks_v_expf(float x)
{
    const float r = 12582912.0;  /* 0x1.8p23 */
    precise float z = ks_fma(x, uintBitsToFloat(0x3FB8AA3Bu), r);
    precise float n = z - r;
    precise float b = ks_fma(-n, uintBitsToFloat(0x35BFBE8Eu),
                             ks_fma(-n, uintBitsToFloat(0x3F317200u), x));
    uint e = floatBitsToUint(z) << 23;
    float k = uintBitsToFloat(e + 0x3F800000u);
    precise float u = b * b;
    precise float j = ks_fma(ks_fma(ks_fma(uintBitsToFloat(0x3C072010u), b,
                                           uintBitsToFloat(0x3D2B9F17u)), u,
                                    ks_fma(uintBitsToFloat(0x3E2AAF33u), b,
                                           uintBitsToFloat(0x3EFFFEDBu))),
                             u, uintBitsToFloat(0x3F7FFFF6u) * b);
    if (!(abs(n) > 126.0))
        return ks_fma(j, k, k);
    uint g = n <= 0.0 ? 0x82000000u : 0u;
    float s1 = uintBitsToFloat(g + 0x7F000000u);
    float s2 = uintBitsToFloat(e - g);
    if (abs(n) > 192.0)
        return s1 * s1;
    precise float t = ks_fma(s2, j, s2) * s1;
    return t;
}

#if defined(KS_F64)
/* 2^(i/32) as binary64 words (low, high) minus i << 47: the table of the
 * expf algorithm glibc (2.27 and later) uses on x86-64. */
const uvec2 ks_exp2_tab[32] = uvec2[32](
    uvec2(0x00000000u, 0x3FF00000u), uvec2(0xD3158574u, 0x3FEFD9B0u),
    uvec2(0x6CF9890Fu, 0x3FEFB558u), uvec2(0xD0125B51u, 0x3FEF9301u),
    uvec2(0x3C7D517Bu, 0x3FEF72B8u), uvec2(0x3168B9AAu, 0x3FEF5487u),
    uvec2(0x6E756238u, 0x3FEF387Au), uvec2(0xF51FDEE1u, 0x3FEF1E9Du),
    uvec2(0x0A31B715u, 0x3FEF06FEu), uvec2(0x373AA9CBu, 0x3FEEF1A7u),
    uvec2(0x4C123422u, 0x3FEEDEA6u), uvec2(0x6061892Du, 0x3FEECE08u),
    uvec2(0xD5362A27u, 0x3FEEBFDAu), uvec2(0x569D4F82u, 0x3FEEB42Bu),
    uvec2(0xDD485429u, 0x3FEEAB07u), uvec2(0xB03A5585u, 0x3FEEA47Eu),
    uvec2(0x667F3BCDu, 0x3FEEA09Eu), uvec2(0xE8EC5F74u, 0x3FEE9F75u),
    uvec2(0x73EB0187u, 0x3FEEA114u), uvec2(0x994CCE13u, 0x3FEEA589u),
    uvec2(0x422AA0DBu, 0x3FEEACE5u), uvec2(0xB0CDC5E5u, 0x3FEEB737u),
    uvec2(0x82A3F090u, 0x3FEEC491u), uvec2(0xB23E255Du, 0x3FEED503u),
    uvec2(0x995AD3ADu, 0x3FEEE89Fu), uvec2(0xF2FB5E47u, 0x3FEEFF76u),
    uvec2(0xDD85529Cu, 0x3FEF199Bu), uvec2(0xDCEF9069u, 0x3FEF3720u),
    uvec2(0xDCFBA487u, 0x3FEF5818u), uvec2(0x337B9B5Fu, 0x3FEF7C97u),
    uvec2(0xA2A490DAu, 0x3FEFA4AFu), uvec2(0x5B6E4540u, 0x3FEFD076u)
);
#endif

/* expf(x) as glibc computes it (KS_F64, on devices with shaderFloat64):
 * in binary64, x/ln2 = k/32 + r/32 rounded by adding 1.5·2^52, 2^(k/32)
 * from the table with k's high part added to the exponent, 2^(r/32) by a
 * cubic, each operation rounded on its own as glibc's build does them
 * (checked on 20M arguments against this machine's libm: identical).
 * Without doubles: the driver's exp, whose last bits may differ. */
float
ks_expf(float x)
{
#if defined(KS_F64)
    const double inv_ln2_n = packDouble2x32(uvec2(0x652B82FEu, 0x40471547u));  /* 32/ln 2 */
    const double shift = 6755399441055744.0LF;             /* 0x1.8p+52 */
    const double c0 = packDouble2x32(uvec2(0x4B912394u, 0x3EBC6AF8u));
    const double c1 = packDouble2x32(uvec2(0x50FAC4F3u, 0x3F2EBFCEu));
    const double c2 = packDouble2x32(uvec2(0xFF0C52D6u, 0x3F962E42u));
    if (x < uintBitsToFloat(0xC2CFF1B4u))  /* -0x1.9fe368p6: glibc's underflow bound */
        return 0.0;
    precise double z = inv_ln2_n * double(x);
    precise double kd = z + shift;
    uvec2 ki = unpackDouble2x32(kd);
    precise double k = kd - shift;
    precise double r = z - k;
    uvec2 t = ks_exp2_tab[ki.x & 31u];
    t.y += ki.x << 15;
    double s = packDouble2x32(t);
    precise double p = c0 * r;
    precise double zz = p + c1;
    precise double r2 = r * r;
    precise double q = c2 * r;
    precise double y = q + 1.0LF;
    precise double w = zz * r2;
    precise double yy = w + y;
    precise double res = yy * s;
    return float(res);
#else
    return exp(x);
#endif
}
