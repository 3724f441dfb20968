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
        S = fmaf(S, ms, vs); /* fused in llama.cpp's build */
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

#ifdef ATTN_TILED_FN
/* llama.cpp's tiled flash attention (ggml_compute_forward_flash_attn_ext_
 * tiled, which its CPU backend runs for batches of 64 or more query rows)
 * for one query row: the query stays f32; the keys go in tiles of 64
 * cache cells counted from cell 0, cells outside [first, first + n_keys)
 * masked; per tile, scores are fma chains over the head dimension (times
 * scale, plus the mask's 0), the online softmax rescales on a new maximum
 * with expf, takes exp(s - max) with ggml_v_expf summed 8 lanes at a
 * time in double, and the value sum is an f32 fma chain over the tile's
 * keys. Each includer defines KQ_TILE(kv_type, kq, q, K, row_bytes, hd,
 * n, scale), EXP_TILE(kq, max) returning the double sum, and
 * V_TILE(kv_type, acc, kq, V, row_bytes, hd, n). */
static void
ATTN_TILED_FN(ks_qtype kv_type, const float *q, const void *K, const void *V,
              uint64_t row_bytes, uint32_t hd, uint32_t first,
              uint32_t n_keys, float scale, float *kq, float *acc, float *out)
{
    const uint8_t *kb = K, *vb = V;
    uint32_t end = first + n_keys;
    float M = -INFINITY, S = 0.0f;

    memset(acc, 0, hd * sizeof(float));
    for (uint32_t c0 = 0; c0 < end; c0 += 64) {
        uint32_t lo = c0 < first ? first : c0;
        uint32_t hi = c0 + 64 < end ? c0 + 64 : end;
        float tmax = -INFINITY, mnew;

        if (hi <= lo) /* every cell masked: the tile is skipped */
            continue;
        for (uint32_t t = 0; t < 64; t++)
            kq[t] = -INFINITY;
        KQ_TILE(kv_type, kq + (lo - c0), q, kb + (uint64_t)lo * row_bytes,
                row_bytes, hd, hi - lo, scale);
        for (uint32_t t = 0; t < 64; t++)
            tmax = tmax > kq[t] ? tmax : kq[t];
        if (tmax == -INFINITY)
            continue;
        mnew = fmaxf(M, tmax);
        if (mnew > M) {
            float ms = expf(M - mnew);
            for (uint32_t d = 0; d < hd; d++)
                acc[d] *= ms;
            S *= ms;
        }
        M = mnew;
        S = (float)((double)S + EXP_TILE(kq, mnew));
        V_TILE(kv_type, acc, kq + (lo - c0), vb + (uint64_t)lo * row_bytes,
               row_bytes, hd, hi - lo);
    }
    {
        float inv = S == 0.0f ? 0.0f : 1.0f / S;
        for (uint32_t d = 0; d < hd; d++)
            out[d] = acc[d] * inv;
    }
}
#endif
