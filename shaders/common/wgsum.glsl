/* Sum of one float per lane over the workgroup, in a fixed tree order
 * (the same result on every lane). The including shader declares
 * `shared float ks_red[WG];` with WG a power of two, and with KS_F64
 * `shared double ks_redd[WG];` for ks_wg_sumd. */
float
ks_wg_sum(float v)
{
    uint lane = gl_LocalInvocationID.x;

    ks_red[lane] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (lane < s) {
            precise float t = ks_red[lane] + ks_red[lane + s];
            ks_red[lane] = t;
        }
        barrier();
    }
    float r = ks_red[0];
    barrier();  /* ks_red is free again */
    return r;
}

#if defined(KS_F64)
double
ks_wg_sumd(double v)
{
    uint lane = gl_LocalInvocationID.x;

    ks_redd[lane] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (lane < s) {
            precise double t = ks_redd[lane] + ks_redd[lane + s];
            ks_redd[lane] = t;
        }
        barrier();
    }
    double r = ks_redd[0];
    barrier();
    return r;
}
#endif

/* The CPU's RMS scale from per-lane partial sums of squares: the squares
 * summed in double (KS_F64; the CPU sums them in order, which can differ
 * from this tree only below double precision), the mean rounded to float,
 * then 1/sqrt(mean + eps) in float. Every lane passes its partial sum. */
#if defined(KS_F64)
#define KS_SQ_T double
#else
#define KS_SQ_T float
#endif
float
ks_rms_scale(KS_SQ_T part, uint n, float eps)
{
#if defined(KS_F64)
    float mean = float(ks_wg_sumd(part) / double(n));
#else
    precise float mean = ks_wg_sum(part) / float(n);
#endif
    precise float t = sqrt(mean + eps);
    precise float r = 1.0 / t;
    return r;
}
