/* The online-softmax loop shared by attn.c and attn_f16c.c; each includes
 * it after defining SCALE_F16(acc, ms, hd) and MAD_F16(acc, v, vs, hd). */
static void
ATTN_FN(ks_qtype kv_type, const void *V, uint64_t row_bytes, uint32_t hd,
        uint32_t n_keys, const float *scores, float scale, float *work,
        float *out)
{
    const uint8_t *v = V;
    uint16_t *acc16 = (uint16_t *)work;
    float M = -INFINITY, S = 0.0f;

    if (kv_type == KS_QUANT_F16)
        memset(acc16, 0, hd * sizeof(uint16_t));
    else
        memset(work, 0, hd * sizeof(float));
    for (uint32_t i = 0; i < n_keys; i++, v += row_bytes) {
        float s = scores[i] * scale, ms = 1.0f, vs = 1.0f;

        if (s > M) {
            float m_old = M;
            M = s;
            ms = expf(m_old - M);
            if (kv_type == KS_QUANT_F16)
                SCALE_F16(acc16, ms, hd);
            else
                for (uint32_t d = 0; d < hd; d++)
                    work[d] *= ms;
        } else {
            vs = expf(s - M);
        }
        if (kv_type == KS_QUANT_F16)
            MAD_F16(acc16, (const uint16_t *)v, vs, hd);
        else
            for (uint32_t d = 0; d < hd; d++)
                work[d] += ((const float *)v)[d] * vs;
        S = S * ms + vs;
    }
    {
        float inv = S == 0.0f ? 0.0f : 1.0f / S;
        if (kv_type == KS_QUANT_F16)
            for (uint32_t d = 0; d < hd; d++)
                out[d] = ks_fp16_to_f32(acc16[d]) * inv;
        else
            for (uint32_t d = 0; d < hd; d++)
                out[d] = work[d] * inv;
    }
}
