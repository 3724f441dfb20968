/* Activation formats: the matrix kernels do not read the f32 activations
 * directly; like the CPU backend (and llama.cpp), the runtime first rounds
 * them to the format each weight type consumes (runtime/cpu/quant.c,
 * ks_cpu_act_type): fp16, bf16 or 8-bit blocks, with d and every q_j
 * computed exactly as the CPU quantizer computes them. Two layouts:
 *
 * KS_AQ_PACKED (the exact matrix kernel, exact.comp), per row of words:
 *   F32 one float per word; F16/BF16 two halves per word (element 2k low);
 *   Q8_0/Q8_1 10 words per 32-block: d (the fp16 d as float bits), s
 *   (Q8_1: fp16(d·Σq) as float bits; Q8_0: 0), 32 int8 little-endian;
 *   Q8_K 73 words per 256-block: d (float bits), 256 int8, 16 int16 bsums
 *   two per word.
 * otherwise (the fast kernel, matvec.comp) the values the blocks stand
 *   for, one float per element: x_j = d·q_j (Q8_1 block sums written
 *   apart through ks_aq_sum, for Q4_1/Q5_1).
 *
 * The including shader defines, before including this file:
 *   float ks_aq_src(uint i)                   element i of the row
 *   void  ks_aq_dst(uint w, uint i, uint v)   store word i of output w
 *   void  ks_aq_sum(uint b, float s)          Q8_1 block sum (float layout)
 * and includes common/numerics.glsl. Loop trips per lane: about 3 x the
 * row length / lanes. */

uint ks_aq_lo;  /* Q8_K: the even bsum waiting for its pair */

#define KS_AQ_F32 0u
#define KS_AQ_F16 1u
#define KS_AQ_BF16 2u
#define KS_AQ_Q8_0 3u
#define KS_AQ_Q8_1 4u
#define KS_AQ_Q8_K 5u

/* d*q_j as the CPU computes it from its integer q_j: q_j = 0 is +0 there,
 * where roundEven gives -0 for small negative values, so a zero q gives a
 * zero with d's sign, made from bits (a compiler may fold float(int(q))
 * back to q, or q + 0.0 to q, even where that is precise). */
float
ks_aq_mul(float d, float q)
{
    precise float y = d * q;
    return q == 0.0 ? uintBitsToFloat(floatBitsToUint(d) & 0x80000000u) : y;
}

/* Rounds elements [0, n) of the row into format |fmt| for output |w|,
 * lanes |lane| of |nl| taking elements, element pairs or blocks
 * round-robin. */
void
ks_actq(uint fmt, uint w, uint n, uint lane, uint nl)
{
#if defined(KS_AQ_PACKED)
    if (fmt == KS_AQ_F16 || fmt == KS_AQ_BF16) {
        for (uint k = lane; k < n / 2u; k += nl) {
            float a = ks_aq_src(2u * k), b = ks_aq_src(2u * k + 1u);
            uint v = fmt == KS_AQ_F16 ? packHalf2x16(vec2(ks_f16r(a), ks_f16r(b)))
                                      : (floatBitsToUint(ks_bf16r(a)) >> 16) |
                                        (floatBitsToUint(ks_bf16r(b)) & 0xFFFF0000u);
            ks_aq_dst(w, k, v);
        }
        return;
    }
#endif
    if (fmt <= KS_AQ_BF16) {
        for (uint i = lane; i < n; i += nl) {
            float v = ks_aq_src(i);
            v = fmt == KS_AQ_F32 ? v : fmt == KS_AQ_F16 ? ks_f16r(v) : ks_bf16r(v);
            ks_aq_dst(w, i, floatBitsToUint(v));
        }
        return;
    }
    if (fmt == KS_AQ_Q8_K) {
        /* quantize_row_q8_K: scale -127/max for the signed value of
         * largest magnitude (the first on ties), quants clamped at 127 */
        for (uint b = lane; b < n / 256u; b += nl) {
            uint base = b * 256u;
            float amax = 0.0, mx = 0.0;
            for (uint j = 0u; j < 256u; j++) {
                float v = ks_aq_src(base + j);
                if (abs(v) > amax) {
                    amax = abs(v);
                    mx = v;
                }
            }
            precise float iscale = amax == 0.0 ? 0.0 : -127.0 / mx;
            precise float d = amax == 0.0 ? 0.0 : 1.0 / iscale;
#if defined(KS_AQ_PACKED)
            uint rec = b * 73u;
            ks_aq_dst(w, rec, floatBitsToUint(d));
            for (uint g = 0u; g < 16u; g++) {
                int bs = 0;
                for (uint wq = 0u; wq < 4u; wq++) {
                    uint word = 0u;
                    for (uint k = 0u; k < 4u; k++) {
                        precise float t = iscale * ks_aq_src(base + 16u * g + 4u * wq + k);
                        int q = int(min(roundEven(t), 127.0));
                        bs += q;
                        word |= (uint(q) & 0xFFu) << (8u * k);
                    }
                    ks_aq_dst(w, rec + 1u + 4u * g + wq, word);
                }
                if ((g & 1u) == 0u)
                    ks_aq_dst(w, rec + 65u + g / 2u, uint(bs) & 0xFFFFu);
                else
                    ks_aq_dst(w, rec + 65u + g / 2u, ks_aq_lo | (uint(bs) << 16));
                ks_aq_lo = uint(bs) & 0xFFFFu;
            }
#else
            for (uint j = 0u; j < 256u; j++) {
                precise float t = iscale * ks_aq_src(base + j);
                float q = min(roundEven(t), 127.0);
                float y = ks_aq_mul(d, q);
                ks_aq_dst(w, base + j, floatBitsToUint(y));
            }
#endif
        }
        return;
    }
    /* Q8_0 / Q8_1: d = amax/127 stored as fp16, q = round(x * 127/amax)
     * with ties to even */
    for (uint b = lane; b < n / 32u; b += nl) {
        uint base = b * 32u;
        float amax = 0.0;
        for (uint j = 0u; j < 32u; j++)
            amax = max(amax, abs(ks_aq_src(base + j)));
        precise float d = amax / 127.0;
        precise float id = amax != 0.0 ? 127.0 / amax : 0.0;
        float dh = ks_f16r(d);
        int sum = 0;
#if defined(KS_AQ_PACKED)
        uint rec = b * 10u;
        for (uint wq = 0u; wq < 8u; wq++) {
            uint word = 0u;
            for (uint k = 0u; k < 4u; k++) {
                precise float t = ks_aq_src(base + 4u * wq + k) * id;
                int q = int(roundEven(t));
                sum += q;
                word |= (uint(q) & 0xFFu) << (8u * k);
            }
            ks_aq_dst(w, rec + 2u + wq, word);
        }
        precise float s = d * float(sum);
        ks_aq_dst(w, rec, floatBitsToUint(dh));
        ks_aq_dst(w, rec + 1u, fmt == KS_AQ_Q8_1 ? floatBitsToUint(ks_f16r(s)) : 0u);
#else
        for (uint j = 0u; j < 32u; j++) {
            precise float t = ks_aq_src(base + j) * id;
            float q = roundEven(t);
            float y = ks_aq_mul(dh, q);
            sum += int(q);
            ks_aq_dst(w, base + j, floatBitsToUint(y));
        }
        if (fmt == KS_AQ_Q8_1) {
            precise float s = d * float(sum);
            ks_aq_sum(b, ks_f16r(s));
        }
#endif
    }
}
